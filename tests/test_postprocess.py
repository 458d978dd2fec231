"""NMS on hand-made rows (and against torchvision's on random ones), and the letterbox / scale-back round
trip, without any model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mhyolo.infer.postprocess import Detections, non_max_suppression, xywh2xyxy, xyxy2xywh
from mhyolo.infer.preprocess import letterbox, scale_boxes_to_original


def _row(cx: float, cy: float, w: float, h: float, obj: float, cls: list[float]) -> list[float]:
    return [cx, cy, w, h, obj, *cls]


# Rows deliberately out of score order, so `indices` cannot coincide with output positions.
ROWS = [
    _row(404, 400, 60, 40, 0.6, [0.1, 0.7]),   # 0: class 1 far away, score 0.42 -> kept
    _row(102, 100, 50, 50, 0.8, [0.9, 0.1]),   # 1: class 0, overlaps row 3 (IoU ~0.92), 0.72 -> suppressed
    _row(100, 100, 50, 50, 0.9, [0.1, 0.8]),   # 2: class 1, same place as row 3, score 0.72 -> kept (other class)
    _row(100, 100, 50, 50, 0.9, [0.9, 0.1]),   # 3: class 0, score 0.81 -> kept, the best box
    _row(104, 98, 50, 50, 0.95, [0.8, 0.2]),   # 4: class 0, overlaps row 3 (IoU ~0.80), 0.76 -> suppressed
    _row(300, 300, 40, 40, 0.9, [0.2, 0.2]),   # 5: objectness high but score 0.18 < 0.25 -> filtered
    _row(500, 100, 40, 40, 0.2, [1.0, 0.0]),   # 6: objectness 0.2 < 0.25 -> filtered
    _row(130, 100, 50, 50, 0.7, [0.9, 0.0]),   # 7: class 0, IoU 0.25 with row 3 -> kept, score 0.63
]


def _pred() -> torch.Tensor:
    return torch.tensor([ROWS], dtype=torch.float32)


def test_nms_keeps_exactly_the_right_rows_per_class():
    (det,) = non_max_suppression(_pred(), conf_thres=0.25, iou_thres=0.45)
    assert isinstance(det, Detections)
    assert det.indices.tolist() == [3, 2, 7, 0]
    assert det.classes.tolist() == [0, 1, 0, 1]
    assert det.indices.dtype == np.int64 and det.classes.dtype == np.int64 and det.boxes.dtype == np.float32
    assert det.scores.tolist() == pytest.approx([0.81, 0.72, 0.63, 0.42], abs=1e-6)
    assert det.boxes[0].tolist() == pytest.approx([75, 75, 125, 125])
    assert det.boxes[3].tolist() == pytest.approx([374, 380, 434, 420])


def test_nms_agnostic_merges_classes():
    (det,) = non_max_suppression(_pred(), conf_thres=0.25, iou_thres=0.45, agnostic=True)
    assert det.indices.tolist() == [3, 7, 0]  # row 2 (class 1) now falls under row 3


def test_nms_max_det_keeps_the_best():
    (det,) = non_max_suppression(_pred(), max_det=2)
    assert det.indices.tolist() == [3, 2]
    assert len(det) == 2


def test_nms_iou_threshold_is_honoured():
    # at IoU 0.2, row 7 (IoU 0.25 with row 3) is suppressed too
    (det,) = non_max_suppression(_pred(), iou_thres=0.2)
    assert det.indices.tolist() == [3, 2, 0]


def test_nms_conf_threshold_is_honoured():
    (det,) = non_max_suppression(_pred(), conf_thres=0.65)
    assert det.indices.tolist() == [3, 2]


def test_nms_batch_with_an_empty_image_and_numpy_fp16_input():
    pred = np.stack([np.array(ROWS, dtype=np.float16), np.zeros((len(ROWS), 7), dtype=np.float16)])
    first, second = non_max_suppression(pred)
    assert first.indices.tolist() == [3, 2, 7, 0]
    assert len(second) == 0
    assert second.boxes.shape == (0, 4) and second.indices.dtype == np.int64


def test_nms_single_image_2d_input():
    (det,) = non_max_suppression(_pred()[0])
    assert det.indices.tolist() == [3, 2, 7, 0]


def test_nms_rejects_rows_without_classes():
    with pytest.raises(ValueError, match="5 \\+ nc"):
        non_max_suppression(torch.zeros(1, 4, 5))


def test_box_format_round_trip():
    xywh = torch.tensor([[100.0, 50.0, 20.0, 10.0]])
    assert xywh2xyxy(xywh).tolist() == [[90.0, 45.0, 110.0, 55.0]]
    assert xyxy2xywh(xywh2xyxy(xywh)).tolist() == xywh.tolist()


def _find_white_box(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image[:, :, 0] > 180)  # pad is grey 114, background black
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@pytest.mark.parametrize(
    ("height", "width", "box"),
    [
        (480, 640, (100, 50, 300, 200)),      # same width, pad top and bottom
        (1080, 810, (40, 230, 790, 760)),     # tall, downscaled
        (200, 300, (20, 30, 120, 170)),       # small, upscaled
        (640, 100, (10, 300, 90, 500)),       # very tall, narrow
        (1000, 3000, (1500, 100, 2900, 900)),  # very wide, strongly downscaled
    ],
)
def test_letterbox_then_scale_back_restores_a_known_box(height, width, box):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    boxed, info = letterbox(image, 640)
    assert boxed.shape == (640, 640, 3)
    assert info.original_shape == (height, width)
    found = _find_white_box(boxed)  # where the box really is in network pixels
    restored = scale_boxes_to_original(found, info)
    tolerance = 1.5 / info.ratio + 0.5  # one resampled pixel at the edge, in original pixels
    assert np.abs(restored - np.array(box, dtype=np.float32)).max() <= tolerance, (restored, box)
    np.testing.assert_array_equal(scale_boxes_to_original(torch.from_numpy(found), info), restored)  # a tensor too


def test_scale_back_clips_to_the_original_image():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    _, info = letterbox(image, 640)
    restored = scale_boxes_to_original(np.array([[-50.0, 0.0, 700.0, 640.0]]), info)
    assert restored.tolist() == [[0.0, 0.0, 400.0, 300.0]]


def test_scale_back_in_numpy_rounds_as_the_tensor_arithmetic_did():
    """Boxes are mapped back in NumPy: exactly the float32 results of the same steps on a tensor."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(-20, 660, (500, 4)).astype(np.float32)
    for height, width in ((480, 640), (1080, 810), (123, 457), (3000, 1000)):
        _, info = letterbox(np.zeros((height, width, 3), np.uint8), 640)
        expected = torch.from_numpy(boxes.copy())
        expected[:, [0, 2]] = ((expected[:, [0, 2]] - info.pad[0]) / info.ratio).clamp(0, width)
        expected[:, [1, 3]] = ((expected[:, [1, 3]] - info.pad[1]) / info.ratio).clamp(0, height)
        np.testing.assert_array_equal(scale_boxes_to_original(boxes, info), expected.numpy())


@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_keeps_the_rows_torchvision_keeps(agnostic):
    """The NumPy/OpenCV NMS keeps torchvision's boxes in torchvision's order: clustered boxes, tied
    scores, three classes, over many random images."""
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(1, 80))
        centre = rng.uniform(0, 60, (n, 2)) + 100 if trial % 2 else rng.uniform(0, 600, (n, 2))
        xywh = np.concatenate([centre, rng.uniform(2, 80, (n, 2))], axis=1)
        scores = rng.uniform(0.3, 1.0, n)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # ties
        classes = rng.integers(0, 3, n)
        rows = np.zeros((n, 8), np.float32)
        rows[:, :4], rows[:, 4] = xywh, scores
        rows[np.arange(n), 5 + classes] = 1.0
        (det,) = non_max_suppression(rows, conf_thres=0.25, iou_thres=0.45, agnostic=agnostic)
        boxes = torch.from_numpy(xywh2xyxy(rows[:, :4]))
        if agnostic:
            keep = torchvision.ops.nms(boxes, torch.from_numpy(rows[:, 4]), 0.45)
        else:
            keep = torchvision.ops.batched_nms(boxes, torch.from_numpy(rows[:, 4]), torch.from_numpy(classes), 0.45)
        assert det.indices.tolist() == keep.tolist(), trial
