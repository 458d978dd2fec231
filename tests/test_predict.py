"""Predictor, sources, drawing and `mhyolo predict`.

The first half runs without any checkpoint, through a small runtime that reports the
bright rectangle it sees in its input. Tests marked `requires_official_weights` run
the official YOLOv5n checkpoint from the shared folder; the bus.jpg test is the
acceptance test of the whole inference core.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mhyolo.errors import ConfigError, DataError
from mhyolo.infer.draw import class_color, draw_predictions, label_for
from mhyolo.infer.predictor import InferenceBackend, Prediction, Predictor
from mhyolo.infer.sources import ImageSource, VideoSource, open_source
from mhyolo.paths import shared_dir


class BrightBoxBackend:
    """A runtime that 'detects' the white rectangle of each input image.

    Per image it returns three rows: a weaker shifted duplicate of the rectangle, the
    rectangle itself, and a row under the threshold, each with a different type, so a
    wrong row gathered for the type head shows up as a wrong type.
    """

    names = ["ball", "other"]
    type_names = ["basketball", "football", "tennis-ball"]
    stride = torch.tensor([8.0, 16.0, 32.0])

    def __init__(self, with_types: bool = True) -> None:
        self.with_types = with_types
        self.input_shapes: list[tuple[int, ...]] = []

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        self.input_shapes.append(tuple(x.shape))
        rows = []
        for image in x:
            ys, xs = torch.nonzero(image.min(dim=0).values > 0.7, as_tuple=True)
            x1, y1, x2, y2 = xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            rows.append([[cx + 2, cy, w, h, 0.6, 0.9, 0.1],
                         [cx, cy, w, h, 0.95, 0.9, 0.1],
                         [10, 10, 5, 5, 0.1, 0.9, 0.1]])
        out = {"detection": torch.tensor(rows, dtype=torch.float32)}
        if self.with_types:
            types = [[0.8, 0.1, 0.1], [0.05, 0.15, 0.8], [0.1, 0.8, 0.1]]
            out["type"] = torch.tensor([types] * len(rows))
        return out


def _image_with_box(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def test_backend_protocol_is_small():
    assert isinstance(BrightBoxBackend(), InferenceBackend)


def test_predictor_maps_boxes_back_and_reads_the_type_of_the_kept_row():
    cases = [((480, 640), (100, 50, 300, 200)), ((1080, 810), (40, 230, 790, 760)), ((200, 300), (20, 30, 120, 170))]
    images = [_image_with_box(h, w, box) for (h, w), box in cases]
    backend = BrightBoxBackend()
    predictions = Predictor(backend, imgsz=640, batch_size=2).predict(images)
    assert backend.input_shapes == [(2, 3, 640, 640), (1, 3, 640, 640)]
    assert len(predictions) == 3
    for prediction, ((h, w), box) in zip(predictions, cases):
        assert len(prediction) == 1  # duplicate suppressed, weak row filtered
        assert prediction.image_shape == (h, w)
        ratio = 640 / max(h, w)
        assert np.abs(prediction.boxes[0] - np.array(box)).max() <= 1.5 / ratio + 0.5
        assert prediction.scores[0] == pytest.approx(0.95 * 0.9, abs=1e-6)
        assert prediction.class_ids.tolist() == [0] and prediction.class_names == ["ball"]
        assert prediction.type_ids.tolist() == [2]
        assert prediction.type_names == ["tennis-ball"]
        assert prediction.type_scores[0] == pytest.approx(0.8)


def test_predictor_rejects_a_size_that_is_not_a_stride_multiple():
    with pytest.raises(ConfigError, match="multiple of the model stride 32"):
        Predictor(BrightBoxBackend(), imgsz=650)


def test_predictor_rejects_grey_images():
    with pytest.raises(ValueError, match="image 0"):
        Predictor(BrightBoxBackend()).predict([np.zeros((10, 10), dtype=np.uint8)])


def test_json_schema_without_types():
    image = _image_with_box(480, 640, (100, 50, 300, 200))
    (prediction,) = Predictor(BrightBoxBackend(with_types=False)).predict([image])
    record = prediction.to_json("a.jpg")
    assert list(record) == ["image", "detections"]
    assert record["image"] == "a.jpg"
    (det,) = record["detections"]
    assert list(det) == ["box", "score", "class", "name"]
    assert all(isinstance(v, float) and round(v, 2) == v for v in det["box"])
    assert det["score"] == 0.855 and isinstance(det["score"], float)
    assert det["class"] == 0 and isinstance(det["class"], int)
    assert det["name"] == "ball"
    assert json.loads(json.dumps(record)) == record


def test_json_schema_with_types_and_rounding():
    prediction = Prediction(boxes=np.array([[1.234, 2.345, 30.0, 40.999]], dtype=np.float32),
                            scores=np.array([0.123456], dtype=np.float32), class_ids=np.array([0]),
                            class_names=["ball"], image_shape=(50, 50), type_ids=np.array([1]),
                            type_names=["football"], type_scores=np.array([0.98766], dtype=np.float32))
    assert prediction.to_json("x.png") == {"image": "x.png", "detections": [
        {"box": [1.23, 2.35, 30.0, 41.0], "score": 0.1235, "class": 0, "name": "ball",
         "type": 1, "type_name": "football", "type_score": 0.9877}]}


def test_json_of_an_image_without_detections():
    prediction = Prediction(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                            class_ids=np.zeros(0, np.int64), class_names=[], image_shape=(5, 5))
    assert prediction.to_json("e.jpg") == {"image": "e.jpg", "detections": []}


def test_draw_writes_a_box_and_label_in_the_class_colour():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    prediction = Prediction(boxes=np.array([[50, 100, 250, 280]], dtype=np.float32),
                            scores=np.array([0.82], dtype=np.float32), class_ids=np.array([3]),
                            class_names=["person"], image_shape=(300, 400))
    drawn = draw_predictions(image, prediction)
    assert not image.any()  # the input is left untouched
    color = class_color(3)
    assert tuple(int(v) for v in drawn[190, 50]) == color  # left edge of the box
    assert tuple(int(v) for v in drawn[280, 150]) == color  # bottom edge
    assert not drawn[190, 150].any()  # inside the box stays as it was
    assert (drawn[70:100, 50:120] == color).all(axis=2).any()  # label background above the box
    assert label_for(prediction, 0) == ("person 0.82", 3)


def test_draw_labels_with_the_type_when_there_is_one():
    prediction = Prediction(boxes=np.array([[5, 5, 20, 20]], dtype=np.float32), scores=np.array([0.9]),
                            class_ids=np.array([0]), class_names=["ball"], image_shape=(30, 30),
                            type_ids=np.array([0]), type_names=["basketball"], type_scores=np.array([0.97]))
    assert label_for(prediction, 0) == ("basketball 0.97", 0)


def test_class_colours_are_stable_and_distinct():
    assert class_color(5) == class_color(5)
    colours = {class_color(i) for i in range(20)}
    assert len(colours) == 20


def test_folder_source_sorted_images_only_and_corrupt_reported(tmp_path):
    for name in ("b.jpg", "a.png"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 200, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    source = open_source(tmp_path)
    assert isinstance(source, ImageSource) and len(source) == 3
    frames = list(source)
    assert [f.name for f in frames] == ["a.png", "b.jpg", "c.jpg"]
    assert frames[0].ok and frames[0].image.shape == (8, 8, 3)
    assert not frames[2].ok and frames[2].image is None and "corrupt" in frames[2].error


def test_sources_refuse_what_they_cannot_open(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_source(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="no images"):
        open_source(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown file type"):
        open_source(tmp_path / "model.onnx")


def _write_video(path: Path, frames: int, size: tuple[int, int] = (96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()


def test_video_source_names_frames(tmp_path):
    _write_video(tmp_path / "clip.mp4", 4)
    source = open_source(tmp_path / "clip.mp4")
    assert isinstance(source, VideoSource) and source.fps == pytest.approx(10.0)
    frames = list(source)
    assert [f.name for f in frames] == ["clip.mp4:0", "clip.mp4:1", "clip.mp4:2", "clip.mp4:3"]
    assert all(f.ok and f.image.shape == (64, 96, 3) for f in frames)


# ---------------------------------------------------------------- with the official weights

WEIGHTS = shared_dir() / "weights" / "yolov5n.pt"
IMAGES = shared_dir() / "images"
requires_official_weights = pytest.mark.skipif(
    not WEIGHTS.is_file() or not (IMAGES / "bus.jpg").is_file(),
    reason=f"shared folder absent: needs {WEIGHTS} and {IMAGES}/bus.jpg")


@pytest.fixture(scope="module")
def official_model():
    from mhyolo.model.weights import load_model

    model = load_model(WEIGHTS)
    model.eval()
    return model


@requires_official_weights
def test_official_weights_on_bus_match_the_reference_scores(official_model):
    """Acceptance test of the core: loading, letterbox, forward, decode, NMS, scale-back."""
    image = cv2.imread(str(IMAGES / "bus.jpg"))
    (prediction,) = Predictor(official_model, imgsz=640, conf=0.25, iou=0.45).predict([image])
    names = prediction.class_names
    persons = sorted((float(s) for s, n in zip(prediction.scores, names) if n == "person"), reverse=True)
    buses = [i for i, n in enumerate(names) if n == "bus"]
    assert len(persons) >= 3, prediction.to_json("bus.jpg")
    assert len(buses) == 1, prediction.to_json("bus.jpg")
    assert persons[:3] == pytest.approx([0.82, 0.82, 0.68], abs=0.02)
    assert float(prediction.scores[buses[0]]) == pytest.approx(0.56, abs=0.02)
    height, width = image.shape[:2]
    x1, y1, x2, y2 = prediction.boxes[buses[0]]
    assert x2 - x1 > 0.8 * width and y1 < height / 2 < y2  # the bus spans the picture


def _sample_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    data = (IMAGES / "bus.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    return folder


@requires_official_weights
def test_cli_folder_with_a_corrupt_image(tmp_path, capsys):
    from mhyolo.cli import main

    folder = _sample_folder(tmp_path)
    out = tmp_path / "out"
    code = main(["predict", str(folder), "--weights", str(WEIGHTS), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["image"] for r in records] == ["bus.jpg", "zidane.jpg"]
    assert {d["name"] for d in records[0]["detections"]} >= {"bus", "person"}
    assert "person" in {d["name"] for d in records[1]["detections"]}
    assert "broken.jpg" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["bus.jpg", "zidane.jpg"]
    for name in ("bus.jpg", "zidane.jpg"):
        original, annotated = cv2.imread(str(folder / name)), cv2.imread(str(out / name))
        assert annotated.shape == original.shape
        assert np.abs(annotated.astype(int) - original.astype(int)).max() > 100  # boxes were drawn


@requires_official_weights
def test_cli_video_writes_an_annotated_mp4(tmp_path, capsys):
    from mhyolo.cli import main

    video = tmp_path / "clip.mp4"
    bus = cv2.resize(cv2.imread(str(IMAGES / "bus.jpg")), (240, 320))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (240, 320))
    for _ in range(3):
        writer.write(bus)
    writer.release()
    out = tmp_path / "out"
    code = main(["predict", str(video), "--weights", str(WEIGHTS), "--imgsz", "320", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == [
        "clip.mp4:0", "clip.mp4:1", "clip.mp4:2"]
    result = cv2.VideoCapture(str(out / "clip.mp4"))
    count = 0
    while result.read()[0]:
        count += 1
    result.release()
    assert count == 3


@requires_official_weights
def test_console_script_predicts_one_image(tmp_path):
    script = Path(sys.executable).with_name("mhyolo")
    assert script.is_file(), f"console script missing at {script}: is the package installed in this venv?"
    result = subprocess.run([str(script), "predict", str(IMAGES / "zidane.jpg"), "--weights", "yolov5n.pt",
                             "--out", str(tmp_path / "out"), "--json"],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert record["image"] == "zidane.jpg"
    assert "person" in {d["name"] for d in record["detections"]}
    assert (tmp_path / "out" / "zidane.jpg").is_file()


@requires_official_weights
def test_cli_usage_errors_exit_2(tmp_path, capsys):
    from mhyolo.cli import main

    assert main(["predict", str(tmp_path / "nothing.jpg"), "--weights", str(WEIGHTS)]) == 2
    assert "nothing.jpg" in capsys.readouterr().err
    assert main(["predict", str(IMAGES / "bus.jpg"), "--weights", str(tmp_path / "missing.pt"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_draw_keeps_a_label_inside_the_image_at_the_right_edge():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    prediction = Prediction(boxes=np.array([[185, 50, 200, 90]], dtype=np.float32), scores=np.array([0.5]),
                            class_ids=np.array([0]), class_names=["person"], image_shape=(100, 200))
    drawn = draw_predictions(image, prediction)
    label_rows = (drawn[:50] == class_color(0)).all(axis=2)
    assert label_rows[:, :150].any()  # the label slid left of the box instead of being cut off


def test_image_head_type_reaches_every_box(tmp_path) -> None:
    """A model with the seed-design image head: each kept box carries the image's type."""
    import numpy as _np
    import torch as _torch

    from mhyolo.infer.predictor import Predictor as _Predictor
    from mhyolo.model.yolo import YoloModel

    model = YoloModel("yolov5n-imagehead", names=["ball"]).eval()
    with _torch.no_grad():  # make every cell confident so boxes survive NMS
        for conv in model.detect.m:
            conv.bias.view(model.detect.na, -1)[:, 4] = 10.0
    image = _np.full((64, 64, 3), 127, _np.uint8)  # square: no letterbox padding, input is uniform
    prediction = _Predictor(model, imgsz=64, conf=0.25).predict([image])[0]
    assert len(prediction) > 0 and prediction.has_types
    expected = model.predict(_torch.zeros(1, 3, 64, 64) + 127 / 255)["image_type"][0].argmax().item()
    assert set(prediction.type_ids.tolist()) == {expected}
    assert prediction.type_names[0] == model.type_names[expected]
