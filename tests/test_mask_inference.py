"""Masks at inference: assembled in NumPy from prototypes and the kept rows' coefficients, mapped back
through the letterbox, and written by `predict` (outlines in the JSON, tinted on the drawing)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mhyolo.cli import main
from mhyolo.data.letterbox import LetterboxInfo
from mhyolo.infer.masks import instance_masks


def test_a_box_wide_mask_maps_back_through_the_letterbox() -> None:
    """A 100x200 image letterboxed into 128x128 (ratio 0.64, 32 px of padding on top): a box of the
    input maps to the original box, and the mask fills exactly that box."""
    prototypes = np.full((2, 32, 32), 10.0, np.float32)
    coefficients = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)  # the second mask is empty
    boxes = np.array([[32, 48, 96, 80], [0, 32, 128, 96]], np.float32)
    info = LetterboxInfo(ratio=0.64, pad=(0.0, 32.0), original_shape=(100, 200))
    crops = instance_masks(prototypes, coefficients, boxes, 4, info)
    masks = np.stack([crop.full() for crop in crops])
    assert masks.shape == (2, 100, 200) and masks.dtype == bool
    assert (crops[0].top, crops[0].left, crops[0].crop.shape) == (25, 50, (50, 100))  # only the box is kept
    ys, xs = np.nonzero(masks[0])
    assert abs(int(xs.min()) - 50) <= 1 and abs(int(xs.max()) - 149) <= 1
    assert abs(int(ys.min()) - 25) <= 1 and abs(int(ys.max()) - 74) <= 1
    assert abs(int(masks[0].sum()) - 100 * 50) <= 300
    assert not masks[1].any()
    assert instance_masks(prototypes, np.zeros((0, 2), np.float32), np.zeros((0, 4), np.float32), 4, info) == []


@pytest.fixture(scope="module")
def seg_checkpoint(official_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COCO YOLOv5n with a (fresh) mask head: its boxes are exactly the official model's."""
    import torch

    from mhyolo.model.weights import import_official, save_checkpoint
    from mhyolo.model.yolo import YoloModel
    from mhyolo.train.state import transfer_weights

    torch.manual_seed(0)
    imported = import_official(official_weights)
    model = YoloModel("yolov5n-seg", nc=80, names=list(imported.names))
    transfer_weights(model, imported.state_dict, None, imported.config)
    model.eval()
    return save_checkpoint(tmp_path_factory.mktemp("seg") / "coco-seg.safetensors", model)


def test_predict_writes_each_box_outline_and_keeps_the_detectors_boxes(
        shared: Path, official_weights: Path, seg_checkpoint: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    image = shared / "images" / "bus.jpg"
    args = ["predict", str(image), "--imgsz", "320", "--json"]
    assert main([*args, "--weights", str(official_weights), "--no-images"]) == 0
    plain = json.loads(capsys.readouterr().out)["detections"]
    assert main([*args, "--weights", str(seg_checkpoint), "--out", str(tmp_path / "drawn")]) == 0
    masked = json.loads(capsys.readouterr().out)["detections"]
    assert len(masked) == len(plain) > 0
    for box, detection in zip(plain, masked):
        assert detection["box"] == pytest.approx(box["box"], abs=0.02) and detection["name"] == box["name"]
        x1, y1, x2, y2 = detection["box"]
        for x, y in detection["mask"]:  # an outline never leaves its box
            assert x1 - 2 <= x <= x2 + 2 and y1 - 2 <= y <= y2 + 2
    assert any(d["mask"] for d in masked)
    drawn = cv2.imread(str(tmp_path / "drawn" / "bus.jpg"))
    assert drawn.shape == cv2.imread(str(image)).shape


def test_tiles_of_a_mask_model_are_refused_with_a_clear_message(
        shared: Path, seg_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", str(shared / "images" / "bus.jpg"), "--weights", str(seg_checkpoint), "--imgsz", "320",
                 "--slice", "320", "--json", "--no-images"])
    assert code == 2
    assert "without --slice" in capsys.readouterr().err


def test_mask_scores_read_a_perfect_ellipse_as_one_and_a_shifted_one_lower() -> None:
    from mhyolo.data.segments import ellipse_polygon, polygon_mask
    from mhyolo.eval.evaluators import MaskScores, ScoredImage

    boxes = np.array([[20.0, 30.0, 80.0, 90.0], [100.0, 10.0, 140.0, 50.0]])
    shape = (120, 160)

    def ellipses(shift: float) -> list[np.ndarray]:
        return list([polygon_mask(ellipse_polygon(np.array([(x1 + x2) / 2 + shift, (y1 + y2) / 2, x2 - x1,
                                                                y2 - y1])), shape) for x1, y1, x2, y2 in boxes])

    figures = []
    for shift in (0.0, 12.0):
        scores = MaskScores(["ball"], class_agnostic=True)
        image = ScoredImage("a.jpg", 160, 120, boxes, np.array([2, 0]), boxes, np.array([0.9, 0.8]), np.zeros(2, int),
                            masks=ellipses(shift))
        scores.process(image, image.detection())
        figures.append(scores.evaluate())
    assert figures[0]["mask_map50"] == pytest.approx(1.0) and figures[0]["mask_map50_95"] == pytest.approx(1.0)
    assert figures[1]["mask_map50_95"] < 0.7
    empty = MaskScores(["ball"], class_agnostic=True)
    image = ScoredImage("b.jpg", 160, 120, boxes, np.array([0, 0]), boxes, np.array([0.9, 0.8]), np.zeros(2, int))
    empty.process(image, image.detection())
    assert empty.evaluate() is None  # a model without masks has no mask part


def test_val_of_a_mask_model_reports_mask_map(shared: Path, official_weights: Path, tmp_path: Path) -> None:
    import torch

    import mhyolo
    from mhyolo.model.weights import import_official, save_checkpoint
    from mhyolo.model.yolo import YoloModel
    from mhyolo.train.state import transfer_weights
    from helpers.tiny_data import tiny_ball_dataset

    torch.manual_seed(0)
    imported = import_official(official_weights)
    model = YoloModel("yolov5n-seg", nc=1, names=["ball"])
    transfer_weights(model, imported.state_dict, 32, imported.config)  # COCO's sports ball as the ball
    weights = save_checkpoint(tmp_path / "ball-seg.safetensors", model.eval())
    data = tiny_ball_dataset(shared, tmp_path / "data")
    row = mhyolo.load(weights).val(data, imgsz=320)
    assert 0.0 <= row["mask_map50"] <= 1.0 and 0.0 <= row["mask_map50_95"] <= row["mask_map50"]


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("openvino", ".xml")])
def test_exported_masks_equal_pytorchs(shared: Path, seg_checkpoint: Path, tmp_path: Path, fmt: str, suffix: str) -> None:
    """The graph ends in named prototype and coefficient outputs; ONNX Runtime's and OpenVINO's masks are
    PyTorch's (IoU of each box's mask)."""
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "openvino")
    import mhyolo

    image = np.ascontiguousarray(cv2.imread(str(shared / "images" / "zidane.jpg"))[:, 280:1000])  # square: one input
    target = mhyolo.load(seg_checkpoint).export(fmt, out=tmp_path / f"seg{suffix}", imgsz=320,
                                                images=[shared / "images" / "bus.jpg"])
    reference = mhyolo.load(seg_checkpoint).predict([image], imgsz=320)[0]
    exported = mhyolo.load(target).predict([image])[0]
    assert len(exported.masks) == len(reference.masks) == len(reference) > 0
    for ours, theirs in zip(exported.masks, reference.masks):
        a, b = ours.full(), theirs.full()
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union > 0.98
