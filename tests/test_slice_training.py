"""Slice-aided training (`augment.slices`): native-resolution windows of large images.

Generated images spell out their own pixel coordinates (`helpers/big_images.py`), so a sample
says where it was cut and is compared with the original's crop array for array; a few real
broadcast frames check the same on balls of 7 x 14 px.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.big_images import SCENES, draw_scene, pixel_boxes, window_origin, write_dataset
from mhyolo.config import from_dict, load_config
from mhyolo.data.augment import AugmentConfig
from mhyolo.data.copy_paste import CopyPasteConfig
from mhyolo.data.dataset import YoloDataset, collate_fn
from mhyolo.data.image_file import read_image
from mhyolo.data.slices import SliceConfig, choose_window, cut_window, is_large
from mhyolo.data.spec import DataSpec, load_data_spec
from mhyolo.data.windows import boxes_in_window, cut_by_window
from mhyolo.errors import ConfigError
from mhyolo.infer.predictor import Prediction
from mhyolo.infer.preprocess import PAD_VALUE
from mhyolo.infer.slicing import place_tile
from mhyolo.pipeline.config import load_pipeline_config
from mhyolo.pipeline.stages import training_plan
from mhyolo.train.config import TrainConfig

IMGSZ = 320
REPO = Path(__file__).resolve().parents[1]
# no affine, colour, flips or mosaic: a sample is its (windowed or shrunk) image, padded
STILL = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0,
             perspective=0.0, flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0)
# sha256 of the batches `_batch_digest` makes, recorded with the code before `augment.slices` and
# `augment.copy_paste` existed (commit 2207823): the options' defaults must leave them byte for byte
DEFAULT_DIGEST = "03fdc73dcd42a58ee161fbe862aa728f8b9498c3c04e7dbfbdd8e1a90c1408f1"


@pytest.fixture
def spec(tmp_path: Path) -> DataSpec:
    return write_dataset(tmp_path / "big")


def _hwc(sample_image: torch.Tensor) -> np.ndarray:
    return sample_image.permute(1, 2, 0).numpy()


def _scene_boxes(name: str) -> tuple[np.ndarray, np.ndarray]:
    balls = np.array(SCENES[name][2], np.float32).reshape(-1, 5)
    return balls[:, 1:], balls[:, 0].astype(np.int64)


def _windowed(spec: DataSpec, **slices) -> YoloDataset:
    return YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**STILL, slices=SliceConfig(**slices)),
                       seed=0, progress=False)


def _batch_digest(spec: DataSpec, configs: list[AugmentConfig]) -> str:
    digest = hashlib.sha256()
    for cfg in configs:
        dataset = YoloDataset(spec, "train", IMGSZ, augment=cfg, seed=7, progress=False)
        for epoch, mosaic in ((0, True), (1, True), (2, False)):
            dataset.set_epoch(epoch)
            dataset.set_mosaic(mosaic)
            batch = collate_fn([dataset[i] for i in range(len(dataset))])
            digest.update(batch.images.numpy().tobytes())
            digest.update(batch.targets.numpy().tobytes())
    return digest.hexdigest()


# -- default behaviour ---------------------------------------------------------------------------

def test_default_training_batches_are_unchanged(spec: DataSpec):
    configs = [AugmentConfig(), AugmentConfig(mixup=0.5, blur=0.5, jpeg=0.5, flipud=0.5)]
    assert _batch_digest(spec, configs) == DEFAULT_DIGEST, \
        "training samples with the small-ball options off are no longer those of the code before them"
    off = [AugmentConfig(slices=SliceConfig(prob=0.0, ball_prob=0.3, min_ratio=1.0),
                         copy_paste=CopyPasteConfig(prob=0.0, max_per_image=5)),
           AugmentConfig(mixup=0.5, blur=0.5, jpeg=0.5, flipud=0.5, slices=SliceConfig(prob=0.0),
                         copy_paste=CopyPasteConfig(prob=0.0))]
    assert _batch_digest(spec, off) == DEFAULT_DIGEST


# -- windows at native resolution ---------------------------------------------------------------

def test_a_window_is_imgsz_at_native_resolution_with_the_boxes_of_the_window_rule(spec: DataSpec):
    dataset = _windowed(spec, prob=1.0, ball_prob=0.5)
    originals = {name: draw_scene(*SCENES[name]) for name in SCENES}
    seen = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index, path in enumerate(dataset.files):
            if not is_large(originals[path.name].shape, IMGSZ, 1.5):
                continue
            sample = dataset[index]
            image = _hwc(sample.image)
            assert image.shape == (IMGSZ, IMGSZ, 3)
            x0, y0 = window_origin(image)
            original = originals[path.name]
            np.testing.assert_array_equal(image, original[y0:y0 + IMGSZ, x0:x0 + IMGSZ])
            boxes, types = _scene_boxes(path.name)
            expected, expected_types = boxes_in_window(boxes, types, (x0, y0, x0 + IMGSZ, y0 + IMGSZ),
                                                       original.shape[:2])
            np.testing.assert_allclose(pixel_boxes(sample.labels.numpy(), IMGSZ), expected, atol=1e-3)
            assert sample.labels[:, 0].long().tolist() == expected_types.tolist()
            seen.add((path.name, x0, y0))
    assert len(seen) > 6, "windows should land in different places over epochs"


def test_windows_are_the_chosen_share_of_large_images(tmp_path: Path):
    # one 640 x 480 image at imgsz 160: large from 240 px on
    scene = (640, 480, [(1, 300, 200, 310, 214)])
    spec = write_dataset(tmp_path / "one", {"wide.png": scene})
    original = draw_scene(*scene)
    dataset = YoloDataset(spec, "train", 160, augment=AugmentConfig(**STILL, slices=SliceConfig(prob=0.3)),
                          seed=1, progress=False)
    draws, windows = 400, 0
    for epoch in range(draws):
        dataset.set_epoch(epoch)
        image = _hwc(dataset[0].image)
        x0, y0 = window_origin(image)
        if np.array_equal(image, original[y0:y0 + 160, x0:x0 + 160]):
            windows += 1
    expected, sigma = draws * 0.3, np.sqrt(draws * 0.3 * 0.7)
    assert abs(windows - expected) <= 4 * sigma, f"{windows} windows in {draws} draws, expected about {expected:.0f}"


def test_ball_windows_at_the_configured_rate_and_holding_their_ball():
    boxes, types = _scene_boxes("big_a.png")
    shape = (720, 1280)
    for ball_prob in (0.0, 0.8, 1.0):
        rng = np.random.default_rng(0)
        held = 0
        draws = 400
        for _ in range(draws):
            choice = choose_window(shape, boxes, IMGSZ, rng, ball_prob)
            x0, y0, x1, y1 = choice.window
            assert (x1 - x0, y1 - y0) == (IMGSZ, IMGSZ) and 0 <= x0 and x1 <= 1280 and 0 <= y0 and y1 <= 720
            if choice.ball is None:
                continue
            held += 1
            kept, _ = boxes_in_window(boxes[choice.ball:choice.ball + 1], types[:1], choice.window, shape)
            np.testing.assert_allclose(kept, boxes[choice.ball:choice.ball + 1] - [x0, y0, x0, y0])
        expected, sigma = draws * ball_prob, np.sqrt(draws * ball_prob * (1 - ball_prob))
        assert abs(held - expected) <= max(4 * sigma, 0), f"ball_prob {ball_prob}: {held} of {draws}"


def test_a_ball_free_image_gets_a_window_anywhere():
    rng = np.random.default_rng(3)
    choices = [choose_window((768, 1024), np.zeros((0, 4)), IMGSZ, rng, 1.0) for _ in range(50)]
    assert all(c.ball is None for c in choices)
    assert len({c.window for c in choices}) > 40


def test_a_ball_held_at_the_image_edge_keeps_the_window_inside_the_image():
    boxes = np.array([[0, 700, 10, 720], [1270, 0, 1280, 12]], np.float32)
    rng = np.random.default_rng(0)
    for _ in range(100):
        choice = choose_window((720, 1280), boxes, IMGSZ, rng, 1.0)
        x0, y0, x1, y1 = choice.window
        assert 0 <= x0 and x1 <= 1280 and 0 <= y0 and y1 <= 720
        kept, _ = boxes_in_window(boxes[choice.ball:choice.ball + 1], np.zeros(1), choice.window, (720, 1280))
        assert len(kept) == 1


def test_images_smaller_than_min_ratio_are_never_windowed(spec: DataSpec):
    plain = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**{**STILL, "mosaic": 0.5}), seed=2,
                        progress=False)
    windowed = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(
        **{**STILL, "mosaic": 0.5}, slices=SliceConfig(prob=1.0, min_ratio=5.0)), seed=2, progress=False)
    for epoch in range(4):
        plain.set_epoch(epoch)
        windowed.set_epoch(epoch)
        for index in range(len(plain)):
            a, b = plain[index], windowed[index]
            assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
    # at the default ratio the two small images (long side below 480) still come out shrunk whole
    ratio = _windowed(spec, prob=1.0)
    plain_still = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**STILL), seed=0, progress=False)
    for index, path in enumerate(ratio.files):
        if path.name.startswith("small_"):
            assert torch.equal(ratio[index].image, plain_still[index].image)


def test_mosaic_tiles_can_be_windows(tmp_path: Path):
    # one large image only: every mosaic tile is it, as a window (its balls at native size) or shrunk
    scenes = {"big_b.png": SCENES["big_b.png"]}
    spec = write_dataset(tmp_path / "b", scenes)
    native = {(20.0, 20.0), (8.0, 14.0)}
    cfg = {**STILL, "mosaic": 1.0}
    slices = SliceConfig(prob=1.0, ball_prob=1.0)
    windowed = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**cfg, slices=slices), seed=0, progress=False)
    shrunk = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**cfg), seed=0, progress=False)
    sizes_windowed, sizes_shrunk = set(), set()
    for epoch in range(8):
        for dataset, sizes in ((windowed, sizes_windowed), (shrunk, sizes_shrunk)):
            dataset.set_epoch(epoch)
            boxes = pixel_boxes(dataset[0].labels.numpy(), IMGSZ)
            inner = (boxes[:, :2] > 0.5).all(axis=1) & (boxes[:, 2:] < IMGSZ - 0.5).all(axis=1)  # not clipped
            sizes.update((round(float(x2 - x1), 1), round(float(y2 - y1), 1)) for x1, y1, x2, y2 in boxes[inner])
    assert sizes_windowed and sizes_windowed <= native, sizes_windowed
    assert sizes_shrunk and not sizes_shrunk & native, sizes_shrunk


def test_same_seed_same_windows_other_seed_other_windows(spec: DataSpec):
    def samples(seed: int) -> list[torch.Tensor]:
        dataset = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(slices=SliceConfig(prob=0.7)), seed=seed,
                              progress=False)
        return [dataset[i].image for i in range(len(dataset))]

    first, again, other = samples(4), samples(4), samples(5)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


# -- one rule for windows and tiles ------------------------------------------------------------

def test_a_cut_box_is_dropped_or_kept_by_the_rule_inference_slicing_uses():
    shape = (720, 1280)
    window = (320, 320, 640, 640)  # every edge inner
    edge_window = (960, 400, 1280, 720)  # right and bottom edges are the image's
    cases = [
        (window, [330, 330, 350, 350], True),   # well inside
        (window, [300, 400, 340, 420], False),  # across the left edge
        (window, [620, 330, 660, 350], False),  # across the right edge
        (window, [400, 630, 420, 660], False),  # across the bottom edge
        (window, [321, 400, 340, 420], False),  # inside, within EDGE_MARGIN of the left edge
        (window, [400, 400, 638, 420], False),  # inside, within EDGE_MARGIN of the right edge
        (window, [400, 400, 637, 420], True),   # just clear of it
        (window, [100, 100, 120, 120], False),  # outside the window
        (edge_window, [1260, 700, 1280, 720], True),  # at the image's own corner
        (edge_window, [950, 500, 980, 520], False),   # across the inner left edge
    ]
    for win, box, kept in cases:
        x0, y0, x1, y1 = win
        image_box = np.array([box], np.float32)
        # training: the labelled box, in image pixels
        train_boxes, _ = boxes_in_window(image_box, np.zeros(1), win, shape)
        # inference: what the model sees of that box in the tile, then the tile's own rule
        seen = np.clip(image_box - [x0, y0, x0, y0], 0, [x1 - x0, y1 - y0, x1 - x0, y1 - y0]).astype(np.float32)
        if seen[0, 2] <= seen[0, 0] or seen[0, 3] <= seen[0, 1]:
            infer_kept = False  # nothing of it in the tile: no prediction there
        else:
            prediction = Prediction(boxes=seen, scores=np.ones(1, np.float32), class_ids=np.zeros(1, np.int64),
                                    class_names=["ball"], image_shape=(y1 - y0, x1 - x0))
            infer_kept = len(place_tile(prediction, win, shape).boxes) == 1
            assert bool(cut_by_window(seen, win, shape)[0]) != kept
        assert (len(train_boxes) == 1) == kept == infer_kept, (win, box)
        if kept:  # kept whole: clipping a box inside the window changes nothing
            np.testing.assert_allclose(train_boxes, image_box - [x0, y0, x0, y0])


def test_the_shared_rule_gives_inference_its_former_results():
    # place_tile's own rule before it moved to data.windows, written out: boxes in tile pixels
    rng = np.random.default_rng(0)
    shape = (720, 960)
    for window in [(0, 0, 320, 320), (320, 0, 640, 320), (640, 400, 960, 720), (200, 200, 520, 520)]:
        x0, y0, x1, y1 = window
        xs, ys = np.sort(rng.uniform(-10, 330, (500, 2)), axis=1), np.sort(rng.uniform(-10, 330, (500, 2)), axis=1)
        boxes = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1).astype(np.float32)
        boxes[:50] = np.round(boxes[:50])  # whole pixels too, on and around the margins
        former = np.zeros(len(boxes), bool)
        if x0 > 0:
            former |= boxes[:, 0] <= 2.0
        if y0 > 0:
            former |= boxes[:, 1] <= 2.0
        if x1 < shape[1]:
            former |= boxes[:, 2] >= (x1 - x0) - 2.0
        if y1 < shape[0]:
            former |= boxes[:, 3] >= (y1 - y0) - 2.0
        np.testing.assert_array_equal(cut_by_window(boxes, window, shape), former)


def test_cut_window_pads_a_short_side_with_grey():
    image = draw_scene(1000, 200, [])
    boxes = np.array([[10, 10, 30, 30], [500, 150, 520, 199]], np.float32)
    sample, kept, kept_types = cut_window(image, boxes, np.array([0, 1]), (400, 0, 720, 200), IMGSZ, PAD_VALUE)
    assert sample.shape == (IMGSZ, IMGSZ, 3)
    np.testing.assert_array_equal(sample[:200], image[:, 400:720])
    assert (sample[200:] == PAD_VALUE).all()
    np.testing.assert_allclose(kept, [[100, 150, 120, 199]])  # the bottom edge is the image's: kept
    assert kept_types.tolist() == [1]


# -- real broadcast frames ---------------------------------------------------------------------

def _broadcast_sample(shared: Path, out: Path, count: int = 2) -> tuple[DataSpec, list[Path]]:
    """The first `count` train frames of football_broadcast with only their ball boxes (class 0)."""
    source = shared / "data" / "football_broadcast" / "train"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir(parents=True)
    chosen = []
    for image in sorted((source / "images").iterdir()):
        rows = [line for line in (source / "labels" / f"{image.stem}.txt").read_text().splitlines()
                if line.split() and line.split()[0] == "0"]
        if rows:
            shutil.copy(image, out / "images" / image.name)
            (out / "labels" / f"{image.stem}.txt").write_text("\n".join(rows) + "\n")
            chosen.append(image)
        if len(chosen) == count:
            break
    (out / "data.yaml").write_text("train: images\nval: images\nnames: [football]\n")
    return load_data_spec(out / "data.yaml"), chosen


def test_real_broadcast_frames_train_on_windows_holding_the_ball_at_native_size(shared: Path, tmp_path: Path):
    spec, _ = _broadcast_sample(shared, tmp_path / "broadcast")
    dataset = _windowed(spec, prob=1.0, ball_prob=1.0)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index, path in enumerate(dataset.files):
            original = read_image(path)
            height, width = original.shape[:2]
            assert is_large(original.shape, IMGSZ, 1.5)
            labels = dataset.labels[index]
            balls = np.stack([(labels[:, 1] - labels[:, 3] / 2) * width, (labels[:, 2] - labels[:, 4] / 2) * height,
                              (labels[:, 1] + labels[:, 3] / 2) * width, (labels[:, 2] + labels[:, 4] / 2) * height], 1)
            sample = dataset[index]
            image = _hwc(sample.image)
            assert image.shape == (IMGSZ, IMGSZ, 3) and len(sample.labels) >= 1
            got = pixel_boxes(sample.labels.numpy(), IMGSZ)
            # the held ball at its native size (a shrunk frame would make it 4x smaller) ...
            sizes = balls[:, 2:] - balls[:, :2]
            match = [(i, j) for i in range(len(got)) for j in range(len(balls))
                     if np.allclose(got[i, 2:] - got[i, :2], sizes[j], atol=1e-3)]
            assert match, f"{path.name}: no ball at native size in {got.round(1).tolist()}"
            i, j = match[0]
            # ... and the window's pixels are the frame's own, where that ball says the window starts
            x0, y0 = np.round(balls[j, :2] - got[i, :2]).astype(int)
            np.testing.assert_array_equal(image, original[y0:y0 + IMGSZ, x0:x0 + IMGSZ])


# -- settings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value", [
    ("slices", "prob", 1.5), ("slices", "prob", -0.1), ("slices", "ball_prob", 2.0), ("slices", "min_ratio", 0.5),
])
def test_bad_slice_settings_name_the_key(section: str, key: str, value: float):
    with pytest.raises(ConfigError, match=rf"augment\.{section}\.{key}"):
        from_dict(TrainConfig, {"augment": {section: {key: value}}})


def test_unknown_or_malformed_slice_settings_are_refused():
    with pytest.raises(ConfigError, match="probability"):
        from_dict(TrainConfig, {"augment": {"slices": {"probability": 0.5}}})
    with pytest.raises(ConfigError, match=r"augment\.slices"):
        from_dict(TrainConfig, {"augment": {"slices": 0.5}})


def test_training_yaml_and_overrides_reach_the_options(tmp_path: Path):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("augment:\n  mixup: 0.2\n  slices: {prob: 0.25, min_ratio: 2.0}\n")
    train = load_config(TrainConfig, hyp, {"augment": {"slices": {"ball_prob": 0.5}, "copy_paste": {"prob": 0.4}}})
    assert train.augment.mixup == 0.2
    slices = train.augment.slices
    assert (slices.prob, slices.ball_prob, slices.min_ratio) == (0.25, 0.5, 2.0)
    assert train.augment.copy_paste.prob == 0.4 and train.augment.copy_paste.max_px == CopyPasteConfig().max_px


@pytest.mark.parametrize("name, option", [("slices", "slices"), ("copy-paste", "copy_paste")])
def test_crossval_files_are_the_frozen_recipe_with_one_option_on(name: str, option: str, tmp_path: Path):
    def plan(file: str) -> TrainConfig:
        return training_plan(load_pipeline_config(REPO / "configs" / "crossval" / file), tmp_path)["multihead"]

    frozen, changed = plan("frozen.yaml"), plan(f"{name}.yaml")
    assert getattr(changed.augment, option).prob == 0.5 and getattr(frozen.augment, option).prob == 0.0
    setattr(changed.augment, option, getattr(frozen.augment, option))
    assert changed == frozen  # nothing else differs: the multihead file's other augment keys are kept
