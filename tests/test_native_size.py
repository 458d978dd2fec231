"""The `native` input-size rule: each image run at its own long side, within [model size, 1280]."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mhyolo.infer.predictor as predictor_module
from mhyolo.cli import main
from mhyolo.errors import ConfigError
from mhyolo.infer.input_size import NativeSize, imgsz_arg
from mhyolo.infer.predictor import Predictor


class BrightBoxBackend:
    """A runtime that finds the white rectangle of each input and records the input shapes."""

    names = ["ball"]
    stride = torch.tensor([8.0, 16.0, 32.0])

    def __init__(self) -> None:
        self.input_shapes: list[tuple[int, ...]] = []

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        self.input_shapes.append(tuple(x.shape))
        rows = []
        for image in x:
            ys, xs = torch.nonzero(image.min(dim=0).values > 0.7, as_tuple=True)
            x1, y1, x2, y2 = xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1
            rows.append([[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.95, 1.0]])
        return {"detection": torch.tensor(rows, dtype=torch.float32)}


class FixedGraph(BrightBoxBackend):
    """The same runtime as an exported graph of one input size."""

    imgsz = 320
    path = Path("model-320.onnx")


def _image_with_box(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


@pytest.mark.parametrize(("height", "width", "low", "expected"), [
    (720, 1280, 320, 1280),  # a broadcast frame at its own size
    (256, 256, 320, 320),  # never below the model's size
    (416, 300, 320, 416),  # already on the grid
    (1500, 2000, 320, 1280),  # never above the ceiling
    (500, 375, 320, 512),  # rounded to the nearest multiple of the stride
    (330, 100, 320, 320),  # 330 rounds down to 320
])
def test_size_for_hand_values(height: int, width: int, low: int, expected: int) -> None:
    assert NativeSize(low).size_for(height, width, 32) == expected


@pytest.mark.parametrize("bounds", [(0,), (-32,), (640, 320), (320.5,)])
def test_bad_bounds_are_refused_naming_the_value(bounds) -> None:
    with pytest.raises(ConfigError, match=str(bounds[-1] if len(bounds) == 1 else bounds[0])):
        NativeSize(*bounds)


def test_bounds_off_the_stride_are_refused() -> None:
    with pytest.raises(ConfigError, match="high 1000 is not a multiple of the model stride 32"):
        NativeSize(320, 1000).size_for(500, 500, 32)
    with pytest.raises(ConfigError, match="low 100"):
        Predictor(BrightBoxBackend(), imgsz=320, native=NativeSize(100))


def test_each_image_of_a_batch_is_letterboxed_at_its_own_size_and_mapped_back() -> None:
    cases = [((720, 1280), (600, 300, 612, 312)), ((240, 300), (20, 30, 120, 170)), ((500, 375), (100, 50, 300, 200))]
    images = [_image_with_box(h, w, box) for (h, w), box in cases]
    seen: list[tuple[int, int]] = []
    original = predictor_module.letterbox

    def spy(image, new_shape, *args, **kwargs):
        seen.append((new_shape, kwargs.get("stride")))
        return original(image, new_shape, *args, **kwargs)

    backend = BrightBoxBackend()
    predictor = Predictor(backend, imgsz=320, batch_size=3, native=NativeSize(320))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor_module, "letterbox", spy)
        predictions = predictor.predict(images)
    assert seen == [(1280, 32), (320, 32), (512, 32)]
    # one batch, padded bottom/right to its largest input: 1280 x 736 (the frame's 720 on the stride grid)
    assert backend.input_shapes == [(3, 3, 736, 1280)]
    for prediction, ((h, w), box) in zip(predictions, cases):
        assert prediction.image_shape == (h, w)
        np.testing.assert_allclose(prediction.boxes[0], box, atol=1.5)


def test_without_native_every_image_is_at_imgsz_and_at_size_drops_the_rule() -> None:
    images = [_image_with_box(720, 1280, (600, 300, 612, 312))]
    backend = BrightBoxBackend()
    Predictor(backend, imgsz=320, rect=True).predict(images)
    native = Predictor(backend, imgsz=320, native=NativeSize(320))
    native.at_size(640).predict(images)
    assert backend.input_shapes == [(1, 3, 192, 320), (1, 3, 640, 640)]  # at_size: square, as rect=False
    assert native.native == NativeSize(320)


def test_a_fixed_size_graph_is_refused_naming_the_file() -> None:
    with pytest.raises(ConfigError, match=r"model-320\.onnx.*--scales / --slice"):
        Predictor(FixedGraph(), imgsz=320, native=NativeSize(320))


def test_native_with_slices_or_scales_is_refused() -> None:
    from mhyolo.infer.multiscale import MultiScalePredictor, ScaleSettings
    from mhyolo.infer.slicing import SlicedPredictor, SliceSettings

    predictor = Predictor(BrightBoxBackend(), imgsz=320, native=NativeSize(320))
    with pytest.raises(ConfigError, match="--slice"):
        SlicedPredictor(predictor, SliceSettings(size=320))
    with pytest.raises(ConfigError, match="--scales"):
        MultiScalePredictor(predictor, ScaleSettings(sizes=(1, 2)))


def test_imgsz_argument_takes_a_size_or_native() -> None:
    import argparse

    assert imgsz_arg("640") == 640 and imgsz_arg("native") == "native"
    with pytest.raises(argparse.ArgumentTypeError, match="'big'"):
        imgsz_arg("big")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A random one-class model saved as trained at 64 px, and two photos of different sizes with labels."""
    from mhyolo.model.weights import save_checkpoint
    from mhyolo.model.yolo import YoloModel

    folder = tmp_path_factory.mktemp("native")
    torch.manual_seed(0)
    weights = save_checkpoint(folder / "model.safetensors", YoloModel("yolov5n", nc=1, names=["ball"]),
                              {"train_config": {"imgsz": 64}})
    (folder / "images" / "val").mkdir(parents=True)
    (folder / "labels" / "val").mkdir(parents=True)
    for name, (h, w) in (("wide", (180, 300)), ("small", (40, 50))):
        cv2.imwrite(str(folder / "images" / "val" / f"{name}.jpg"), _image_with_box(h, w, (10, 10, 30, 30)))
        (folder / "labels" / "val" / f"{name}.txt").write_text(f"0 {20 / w} {20 / h} {20 / w} {20 / h}\n")
    data = folder / "data.yaml"
    data.write_text("path: .\ntrain: images/val\nval: images/val\nnc: 1\nnames: [ball]\n")
    return weights, data, folder / "images" / "val"


def _letterbox_sizes(monkeypatch: pytest.MonkeyPatch) -> list:
    seen: list = []
    original = predictor_module.letterbox

    def spy(image, new_shape, *args, **kwargs):
        seen.append(new_shape)
        return original(image, new_shape, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "letterbox", spy)
    return seen


def test_predict_and_val_take_imgsz_native(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    weights, data, images = tiny
    seen = _letterbox_sizes(monkeypatch)
    assert main(["predict", str(images), "--weights", str(weights), "--imgsz", "native", "--json",
                 "--no-throughput", "--out", str(tmp_path / "out")]) == 0
    assert sorted(seen) == [64, 288]  # 300 px rounds to 288; 50 px stays at the trained 64
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["image"] for line in lines) == ["small.jpg", "wide.jpg"]
    seen.clear()
    assert main(["val", "--data", str(data), "--weights", str(weights), "--imgsz", "native", "--json"]) == 0
    assert sorted(seen) == [64, 288]
    assert json.loads(capsys.readouterr().out)["images"] == 2


def _input_sides(monkeypatch: pytest.MonkeyPatch) -> list:
    """The long side of every batch the model is called on, whichever path letterboxed it."""
    from mhyolo.infer.inference import Inference

    sides: list = []
    original = Inference.call

    def spy(self, x):
        sides.append(max(x.shape[-2:]))
        return original(self, x)

    monkeypatch.setattr(Inference, "call", spy)
    return sides


def test_the_default_rule_runs_the_training_size_and_each_image_s_own_size_unless_a_size_or_scales_are_given(
        tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import mhyolo

    weights, data, images = tiny
    seen = _letterbox_sizes(monkeypatch)
    assert main(["predict", str(images), "--weights", str(weights), "--json", "--no-throughput",
                 "--out", str(tmp_path / "out")]) == 0
    assert sorted(seen) == [64, 64, 288]  # the 300-px photo at 64 and at 288; the 50-px one at 64, once
    assert "64 px and each image at its own size, merged by size (the default" in capsys.readouterr().err
    seen.clear()
    assert main(["val", "--data", str(data), "--weights", str(weights), "--json"]) == 0
    assert sorted(seen) == [64, 64, 288]
    seen.clear()
    inputs = _input_sides(monkeypatch)
    assert main(["val", "--data", str(data), "--weights", str(weights), "--imgsz", "64", "--json"]) == 0
    assert seen == [] and inputs and max(inputs) == 64  # a size asked for is kept: never the native 288
    inputs.clear()
    assert main(["val", "--data", str(data), "--weights", str(weights), "--scales", "64", "--json"]) == 0
    assert seen == [64, 64] and max(inputs) == 64  # scales are sizes of their own
    capsys.readouterr()
    seen.clear()
    model = mhyolo.load(weights)
    model.predict(str(images / "wide.jpg"))
    assert seen == [64, 288]
    seen.clear()
    model.val(data)
    assert sorted(seen) == [64, 64, 288]


def test_the_api_takes_imgsz_native(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    import mhyolo

    weights, data, images = tiny
    seen = _letterbox_sizes(monkeypatch)
    model = mhyolo.load(weights)
    results = model.predict(str(images / "wide.jpg"), imgsz="native")
    assert seen == [288] and results[0].prediction.image_shape == (180, 300)
    assert model.val(data, imgsz="native")["images"] == 2
    with pytest.raises(ConfigError, match="'big'"):
        model.predict(str(images / "wide.jpg"), imgsz="big")
    with pytest.raises(ConfigError, match="native"):
        model.predict(str(images / "wide.jpg"), imgsz="native", slice_size=32)


@pytest.mark.parametrize("command", ["predict", "val", "benchmark"])
def test_a_bad_imgsz_word_is_a_clear_usage_error(command: str, capsys) -> None:
    argv = {"predict": ["predict", "x.jpg"], "val": ["val", "--data", "d.yaml"], "benchmark": ["benchmark"]}[command]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--weights", "absent.pt", "--imgsz", "big"])
    assert exit_info.value.code == 2
    assert "'big' is neither a size in pixels nor 'native'" in capsys.readouterr().err
