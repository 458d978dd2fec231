"""Multi-scale (and flip) inference, on synthetic images and a backend that sees only some sizes.

`BandBackend` is a real detector of a trivial kind: every bright square whose side in the network's
input lies in [low, high] pixels becomes one detection, typed by its colour (white: type 0, yellow:
type 1). A small square is then found only at a large scale and a large one only at a small
scale, which makes the scale geometry, the flip and the merge rules checkable to the pixel,
independently of any trained model. Real models at several scales: `test_multiscale_models.py`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mhyolo.cli import build_parser, main
from mhyolo.commands.scale_args import multiscale_settings
from mhyolo.errors import ConfigError
from mhyolo.infer.multiscale import MultiScalePredictor, ScaleSettings, flip_back, parse_scales
from mhyolo.infer.predictor import Prediction, Predictor
from mhyolo.infer.scale_merge import MERGE_RULES, MergeOptions, ScalePass, in_band

WHITE, YELLOW = (255, 255, 255), (0, 255, 255)  # BGR


class BandBackend:
    """Bright squares with a side of `low`..`high` input pixels -> detections; `false_small` also reports
    every smaller square as a confident box twice its size (what a small input does to small balls);
    `right_half_only` reports only squares in the right half of its input."""

    names = ["ball"]
    type_names = ["white", "yellow"]
    stride = torch.tensor([8.0, 16.0, 32.0])

    def __init__(self, low: float = 16, high: float = 130, false_small: bool = False,
                 right_half_only: bool = False) -> None:
        self.low, self.high = low, high
        self.false_small = false_small
        self.right_half_only = right_half_only
        self.shapes: list[tuple[int, int]] = []

    def _rows(self, image: torch.Tensor) -> list[list[float]]:
        bright = ((image[0] > 0.9) & (image[1] > 0.9)).numpy().astype(np.uint8)  # R and G: white or yellow
        count, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
        rows = []
        for k in range(1, count):
            x, y, w, h = (float(v) for v in stats[k][:4])
            if self.right_half_only and x + w / 2 < image.shape[-1] / 2:
                continue
            yellow = float(image[2][torch.from_numpy(labels == k)].mean()) < 0.5  # blue channel off
            types = [0.1, 0.9] if yellow else [0.9, 0.1]
            if self.low <= max(w, h) <= self.high:
                rows.append([x + w / 2, y + h / 2, w, h, 0.9, 1.0, *types])
            elif self.false_small and max(w, h) < self.low:
                rows.append([x + w / 2, y + h / 2, 2 * w, 2 * h, 0.95, 1.0, *types])
        return rows

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        rows = []
        for image in x:
            self.shapes.append(tuple(image.shape[-2:]))
            found = self._rows(image)
            rows.append(torch.tensor(found + [[0.0] * 8] * (6 - len(found)), dtype=torch.float32)[:6])
        batch = torch.stack(rows)
        return {"detection": batch[..., :6], "type": batch[..., 6:]}


def _image(height: int, width: int, squares: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]
           ) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    for (x0, y0, x1, y1), colour in squares:
        image[y0:y1, x0:x1] = colour
    return image


SMALL = (100, 100, 120, 120)  # 20 px: 10 px at 320 (missed), 20 at 640 (found)
LARGE = (350, 150, 590, 390)  # 240 px: 120 at 320 (found), 240 at 640 (missed)
MEDIUM = (100, 300, 160, 360)  # 60 px: 30 at 320 and 60 at 640, found at both
FALSE_SMALL = (90, 90, 130, 130)  # the box `false_small` reports for SMALL at 320


def _scene() -> np.ndarray:
    return _image(480, 640, [(SMALL, WHITE), (LARGE, YELLOW), (MEDIUM, WHITE)])


def _settings(merge: str, **kwargs) -> ScaleSettings:
    return ScaleSettings(sizes=(1, 2), merge=merge, **kwargs)  # 320 and 640 at imgsz 320


def _match(prediction: Prediction, square: tuple[int, int, int, int]) -> list[int]:
    """Indices of the boxes within 2 px of `square`."""
    return [i for i, box in enumerate(prediction.boxes) if np.abs(box - np.array(square)).max() <= 2.0]


@pytest.mark.parametrize("merge", sorted(MERGE_RULES))
@pytest.mark.parametrize("flip", [False, True])
def test_each_object_found_at_its_own_scale_comes_back_once_in_place(merge: str, flip: bool) -> None:
    image = _scene()
    predictor = Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True)
    # neither scale alone finds all three
    at_320 = predictor.predict([image])[0]
    at_640 = predictor.at_size(640).predict([image])[0]
    assert not _match(at_320, SMALL) and _match(at_320, LARGE)
    assert _match(at_640, SMALL) and not _match(at_640, LARGE)
    (merged,) = MultiScalePredictor(predictor, _settings(merge, flip=flip)).predict([image])
    assert len(merged) == 3, merged.boxes
    for square, type_name in ((SMALL, "white"), (LARGE, "yellow"), (MEDIUM, "white")):
        (index,) = _match(merged, square)
        assert merged.type_names[index] == type_name  # types survive the merge
        assert merged.class_names[index] == "ball"
    assert merged.image_shape == (480, 640)


def test_a_fixed_size_graph_runs_a_larger_scale_as_tiles_and_refuses_a_smaller_one() -> None:
    backend = BandBackend()
    backend.imgsz = 320  # what exported backends carry: a fixed square input
    predictor = Predictor(backend, imgsz=320, conf=0.25, rect=True)
    (merged,) = MultiScalePredictor(predictor, _settings("wbf")).predict([_scene()])
    assert {shape for shape in backend.shapes} == {(320, 320)}  # every call at the graph's own size
    assert len(merged) == 3
    for square in (SMALL, LARGE, MEDIUM):
        assert len(_match(merged, square)) == 1
    with pytest.raises(ConfigError, match=r"fixed 320 px input; a smaller scale \(160 px\)"):
        MultiScalePredictor(predictor, ScaleSettings(sizes=(0.5, 1)))


def test_a_box_found_only_on_the_flipped_pass_maps_back_to_its_place() -> None:
    left = (60, 200, 100, 240)  # left half of the image: the backend reports it only once mirrored
    image = _image(480, 640, [(left, WHITE)])
    predictor = Predictor(BandBackend(low=8, right_half_only=True), imgsz=640, conf=0.25, rect=True)
    assert len(predictor.predict([image])[0]) == 0
    unflipped = MultiScalePredictor(predictor, ScaleSettings(sizes=(1, 0.5), merge="nms"))
    assert len(unflipped.predict([image])[0]) == 0
    (found,) = MultiScalePredictor(predictor, ScaleSettings(sizes=(1, 0.5), merge="nms", flip=True)
                                   ).predict([image])
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], left, atol=1.0)


def test_flip_back_mirrors_boxes_in_the_original_width() -> None:
    mirrored = Prediction(boxes=np.array([[500, 10, 540, 50]], np.float32), scores=np.ones(1, np.float32),
                          class_ids=np.zeros(1, np.int64), class_names=["ball"], image_shape=(480, 640))
    np.testing.assert_allclose(flip_back(mirrored).boxes, [[100, 10, 140, 50]])


def test_the_size_rule_drops_confident_false_boxes_of_the_small_scale() -> None:
    # at 320 the small square is 10 px: the backend reports a confident box twice its size there,
    # which plain NMS keeps beside the right one from 640 (they overlap by IoU 0.25 only)
    image = _image(480, 640, [(SMALL, WHITE), (LARGE, YELLOW)])
    predictor = Predictor(BandBackend(false_small=True), imgsz=320, conf=0.25, rect=True)
    (nms,) = MultiScalePredictor(predictor, _settings("nms")).predict([image])
    assert len(nms) == 3 and len(_match(nms, SMALL)) == 1
    (false,) = _match(nms, FALSE_SMALL)
    assert nms.scores[false] > nms.scores[_match(nms, SMALL)[0]]  # and ranks it first
    for then in ("wbf", "nms"):
        options = MergeOptions(band=(24.0, 130.0), then=then)  # the false box is 20 px at 320: dropped there
        (sized,) = MultiScalePredictor(predictor, _settings("size", options=options)).predict([image])
        assert len(sized) == 2, (then, sized.boxes)
        assert len(_match(sized, SMALL)) == 1 and len(_match(sized, LARGE)) == 1
    # a score factor on the small scale ranks its false box below the large scale's right one
    (weighted,) = MultiScalePredictor(predictor, _settings("nms", weights=(0.5, 1.0))).predict([image])
    (false,) = _match(weighted, FALSE_SMALL)
    np.testing.assert_allclose(weighted.scores[false], 0.95 * 0.5, atol=1e-6)
    assert weighted.scores[_match(weighted, SMALL)[0]] > weighted.scores[false]


def test_the_size_band_keeps_what_each_scale_sees_well() -> None:
    boxes = np.array([[0, 0, 6, 6], [0, 0, 40, 40], [0, 0, 200, 100]], np.float32)  # 6, 40, 200 px originals
    prediction = Prediction(boxes=boxes, scores=np.full(3, 0.9, np.float32), class_ids=np.zeros(3, np.int64),
                            class_names=["ball"] * 3, image_shape=(480, 640))
    # ratio 1 (input px = original px), the band 8..160
    middle = in_band(ScalePass(prediction, 640, 1.0, smallest=False, largest=False), (8.0, 160.0))
    smallest = in_band(ScalePass(prediction, 640, 1.0, smallest=True, largest=False), (8.0, 160.0))
    largest = in_band(ScalePass(prediction, 640, 1.0, smallest=False, largest=True), (8.0, 160.0))
    half = in_band(ScalePass(prediction, 320, 0.5, smallest=False, largest=False), (8.0, 160.0))
    assert middle.prediction.boxes[:, 2].tolist() == [40]
    assert smallest.prediction.boxes[:, 2].tolist() == [40, 200]
    assert largest.prediction.boxes[:, 2].tolist() == [6, 40]
    assert half.prediction.boxes[:, 2].tolist() == [40, 200]  # 200 px is 100 at half scale


def test_wbf_fuses_by_score_and_takes_the_type_of_its_best_member() -> None:
    def one(box: list[float], score: float, type_id: int) -> ScalePass:
        return ScalePass(Prediction(boxes=np.array([box], np.float32), scores=np.array([score], np.float32),
                                    class_ids=np.zeros(1, np.int64), class_names=["ball"], image_shape=(100, 200),
                                    type_ids=np.array([type_id]), type_names=[f"t{type_id}"],
                                    type_scores=np.array([0.6 + 0.1 * type_id], np.float32)), 320, 1.0)

    merged = MERGE_RULES["wbf"].merge([one([10, 10, 30, 30], 0.3, 0), one([12, 10, 32, 30], 0.9, 1)],
                                      MergeOptions())
    assert len(merged) == 1
    np.testing.assert_allclose(merged.boxes[0], [10 + 2 * 0.9 / 1.2, 10, 30 + 2 * 0.9 / 1.2, 30], atol=1e-3)
    np.testing.assert_allclose(merged.scores, [0.6], atol=1e-6)  # the mean of 0.3 and 0.9 (both passes found it)
    assert merged.type_ids.tolist() == [1] and merged.type_names == ["t1"]
    np.testing.assert_allclose(merged.type_scores, [0.7], atol=1e-6)
    best = MERGE_RULES["wbf"].merge([one([10, 10, 30, 30], 0.3, 0), one([12, 10, 32, 30], 0.9, 1)],
                                    MergeOptions(wbf_conf="max"))
    np.testing.assert_allclose(best.scores, [0.9], atol=1e-6)


@pytest.mark.parametrize("value", [0, -1, "abc", 100, "0", "-1", "nan", 0.01])
def test_bad_scales_are_refused_naming_the_value(value) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"--scales {value!r}")):
        parse_scales([1, value], imgsz=320, stride=32)


def test_scales_resolve_factors_and_pixel_sizes() -> None:
    assert parse_scales([0.5, 1, 2], 320, 32) == (160, 320, 640)
    assert parse_scales(["640", "1", 320], 320, 32) == (320, 640)  # duplicates once, smallest first
    assert parse_scales([1.33], 320, 32) == (416,)  # 425.6 px: 416 = 13 x 32 is the nearest multiple of the stride


def _parsed(command: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(command)


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_bad_scales_are_refused_by_the_commands_before_a_model_loads(value: str, capsys, tmp_path: Path) -> None:
    for command in (["predict", str(tmp_path / "x.jpg")], ["val", "--data", "d.yaml"]):
        args = _parsed([*command, "--weights", "absent.pt", "--scales", "1", value])
        with pytest.raises(ConfigError, match=f"'{value}'"):
            multiscale_settings(args)
        assert main([*command, "--weights", "absent.pt", "--scales", "1", value]) == 2
        assert f"'{value}'" in capsys.readouterr().err
    args = _parsed(["benchmark", "--weights", "absent.pt", "--scales", value])
    with pytest.raises(ConfigError, match=f"'{value}'"):
        multiscale_settings(args, every_rule_by_default=True)


def test_multiscale_flags_without_scales_and_unknown_rules_are_refused() -> None:
    with pytest.raises(ConfigError, match="--flip, --merge need --scales"):
        multiscale_settings(_parsed(["predict", "x.jpg", "--weights", "w.pt", "--flip", "--merge", "nms"]))
    with pytest.raises(ConfigError, match="--merge 'median'"):
        multiscale_settings(_parsed(["predict", "x.jpg", "--weights", "w.pt", "--scales", "1", "--merge", "median"]))
    with pytest.raises(ConfigError, match="--size-then 'size'"):
        multiscale_settings(_parsed(["val", "--data", "d", "--weights", "w", "--scales", "1", "--size-then", "size"]))
    with pytest.raises(ConfigError, match="--scale-weights 1.5"):
        multiscale_settings(_parsed(["val", "--data", "d", "--weights", "w", "--scales", "1", "2",
                                     "--scale-weights", "1", "1.5"]))
    rules = multiscale_settings(_parsed(["benchmark", "--weights", "w", "--scales", "1", "2"]),
                                every_rule_by_default=True)
    assert [s.merge for s in rules] == list(MERGE_RULES)
    assert multiscale_settings(_parsed(["predict", "x.jpg", "--weights", "w.pt"])) == []


def test_a_pixel_scale_off_the_stride_is_refused_through_the_command_line(official_weights: Path, tmp_path: Path,
                                                                          capsys) -> None:
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), _scene())
    code = main(["predict", str(photo), "--weights", str(official_weights), "--imgsz", "320", "--scales", "1", "100",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--scales '100': a pixel size must be a multiple of the model stride (32 px)" in capsys.readouterr().err


def test_one_scale_is_the_predictor_alone_byte_for_byte() -> None:
    image = _scene()
    predictor = Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True)
    alone = predictor.predict([image])[0]
    for merge in MERGE_RULES:
        (single,) = MultiScalePredictor(predictor, ScaleSettings(sizes=(1,), merge=merge)).predict([image])
        assert json.dumps(single.to_json("x.jpg")) == json.dumps(alone.to_json("x.jpg"))
        np.testing.assert_array_equal(single.boxes, alone.boxes)


# ------------------------------------------------------------------ the native scale: each image at its own size
def test_the_native_scale_alone_is_the_native_predictor_byte_for_byte() -> None:
    from mhyolo.infer.input_size import NativeSize

    image = _scene()  # 480 x 640: its own size is 640
    native = Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True, native=NativeSize.from_low(320))
    alone = native.predict([image])[0]
    plain = Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True)
    (single,) = MultiScalePredictor(plain, ScaleSettings(sizes=("native",))).predict([image])
    assert json.dumps(single.to_json("x.jpg")) == json.dumps(alone.to_json("x.jpg"))


@pytest.mark.parametrize("merge", sorted(MERGE_RULES))
def test_the_training_size_and_native_on_a_640_px_image_are_320_and_640(merge: str) -> None:
    image = _scene()
    predictor = Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True)
    (fixed,) = MultiScalePredictor(predictor, ScaleSettings(sizes=(320, 640), merge=merge)).predict([image])
    both = MultiScalePredictor(predictor, ScaleSettings(sizes=(320, "native"), merge=merge))
    (native,) = both.predict([image])
    assert json.dumps(native.to_json("x.jpg")) == json.dumps(fixed.to_json("x.jpg"))
    assert len(native) == 3 and both.passes_per_image == 2
    assert both.describe() == f"320 px and each image at its own size, merged by {merge}"


def test_a_native_pass_as_large_as_the_fixed_one_is_both_smallest_and_largest() -> None:
    from mhyolo.infer.multiscale import _ranked

    empty = Predictor(BandBackend(), imgsz=320).predict([np.zeros((256, 256, 3), np.uint8)])[0]
    ranked = _ranked([ScalePass(empty, 320, 1.25), ScalePass(empty, 320, 1.25)])  # a 256-px photo: both at 320
    assert all(p.smallest and p.largest for p in ranked)
    ranked = _ranked([ScalePass(empty, 320, 0.25), ScalePass(empty, 1280, 1.0)])
    assert [(p.smallest, p.largest) for p in ranked] == [(True, False), (False, True)]


def test_the_native_scale_is_refused_on_a_fixed_graph_and_misspelt_words_are_named() -> None:
    backend = BandBackend()
    backend.imgsz = 320
    predictor = Predictor(backend, imgsz=320, conf=0.25, rect=True)
    with pytest.raises(ConfigError, match="--scales native: .*fixed 320 px input"):
        MultiScalePredictor(predictor, ScaleSettings(sizes=(320, "native")))
    with pytest.raises(ConfigError, match="'nativ': not a number .* or native"):
        ScaleSettings(sizes=(320, "nativ"))
    with pytest.raises(ConfigError, match=r"2 scale\(s\) \(320 native px\)"):
        MultiScalePredictor(Predictor(BandBackend(), imgsz=320), ScaleSettings(sizes=(320, "native"), weights=(1.0,)))
