"""`mhyolo val` wiring: official COCO weights on a tiny COCO-style set with known answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mhyolo.cli import main
from mhyolo.infer.predictor import Predictor
from mhyolo.model.weights import load_model


def _write_dataset(root: Path, images: list[Path], boxes: dict[str, list[tuple[int, np.ndarray]]],
                   names: list[str]) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for image in images:
        shutil.copy(image, root / "images" / "val" / image.name)
        h, w = cv2.imread(str(image)).shape[:2]
        lines = []
        for cls, (x1, y1, x2, y2) in boxes[image.name]:
            lines.append(f"{cls} {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} {(y2 - y1) / h:.8f}")
        (root / "labels" / "val" / f"{image.stem}.txt").write_text("\n".join(lines) + "\n")
    shutil.copy(images[0], root / "images" / "train" / images[0].name)
    data = root / "data.yaml"
    data.write_text(json.dumps({"path": ".", "train": "images/train", "val": "images/val", "names": names}))
    return data


@pytest.fixture(scope="module")
def coco_predictions(official_weights: Path, shared: Path) -> tuple[list[Path], dict, list[str]]:
    model = load_model(official_weights)
    images = [shared / "images" / "bus.jpg", shared / "images" / "zidane.jpg"]
    predictor = Predictor(model, imgsz=640, conf=0.25, iou=0.45)
    preds = predictor.predict([cv2.imread(str(p)) for p in images])
    boxes = {p.name: [(int(c), b) for c, b in zip(pred.class_ids, pred.boxes)] for p, pred in zip(images, preds)}
    return images, boxes, model.names


def _val(data: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    code = main(["val", "--data", str(data), "--weights", "yolov5n.pt", "--imgsz", "640", "--conf", "0.25",
                 "--iou", "0.45", "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_val_of_own_predictions_is_perfect(tmp_path: Path, coco_predictions, capsys) -> None:
    images, boxes, names = coco_predictions
    result = _val(_write_dataset(tmp_path, images, boxes, names), capsys)
    assert result["images"] == 2 and result["boxes"] == sum(len(b) for b in boxes.values())
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    assert result["precision"] == pytest.approx(1.0) and result["recall"] == pytest.approx(1.0)


def test_val_with_one_unfound_person_gives_the_hand_computed_map(tmp_path: Path, coco_predictions, capsys) -> None:
    images, boxes, names = coco_predictions
    boxes = {k: list(v) for k, v in boxes.items()}
    # an extra person far from every detection, on bus.jpg: nothing can match it
    boxes["bus.jpg"].append((0, np.array([700.0, 1000.0, 760.0, 1070.0])))
    classes = {c for v in boxes.values() for c, _ in v}
    persons = sum(c == 0 for v in boxes.values() for c, _ in v)
    result = _val(_write_dataset(tmp_path, images, boxes, names), capsys)
    # person: precision 1 up to recall (persons-1)/persons, then nothing. COCO's 101-point
    # interpolation counts the recall thresholds 0, 0.01, ... up to that recall.
    found = (persons - 1) / persons
    person_ap = sum(1 for r in np.linspace(0, 1, 101) if r <= found + 1e-9) / 101
    expected = (person_ap + (len(classes) - 1) * 1.0) / len(classes)
    assert result["map50"] == pytest.approx(expected, abs=1e-6)
    assert result["map50_95"] == pytest.approx(expected, abs=1e-6)


def test_val_refuses_mismatched_class_count(tmp_path: Path, coco_predictions, capsys) -> None:
    images, boxes, _ = coco_predictions
    data = _write_dataset(tmp_path, images, {k: [(0, b) for _, b in v] for k, v in boxes.items()}, ["a", "b"])
    assert main(["val", "--data", str(data), "--weights", "yolov5n.pt", "--json"]) == 2
    assert "line up" in capsys.readouterr().err


def test_val_leaves_autograd_on_for_the_caller(tmp_path: Path, coco_predictions, capsys) -> None:
    import torch

    images, boxes, names = coco_predictions
    _val(_write_dataset(tmp_path, images, boxes, names), capsys)
    assert torch.is_grad_enabled()


def test_false_alarms_are_counted_on_ball_free_images_only() -> None:
    import numpy as np

    from mhyolo.eval.metrics import ImageResult
    from mhyolo.eval.negatives import negative_stats

    def image(gt: int, scores: list[float]) -> ImageResult:
        return ImageResult(gt_boxes=np.tile([[0, 0, 10, 10]], (gt, 1)).astype(np.float32),
                           gt_classes=np.zeros(gt, np.int64),
                           pred_boxes=np.tile([[0, 0, 10, 10]], (len(scores), 1)).astype(np.float32),
                           pred_scores=np.array(scores, np.float32), pred_classes=np.zeros(len(scores), np.int64),
                           width=100, height=100)

    stats = negative_stats([image(1, [0.9, 0.8]),          # has a ball: its extra box is not counted here
                            image(0, [0.9, 0.3, 0.1]),     # two detections a user would see
                            image(0, [0.2]),               # below 0.25: not shown
                            image(0, [])])
    assert (stats.images, stats.false_positives, stats.images_with_false_positives) == (3, 2, 1)
    assert stats.per_image == 2 / 3 and stats.to_dict()["negative_images"] == 3
    assert negative_stats([image(1, [0.9])]).per_image is None
