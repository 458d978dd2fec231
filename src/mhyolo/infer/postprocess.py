"""Post-processing shared by every runtime: raw detection rows -> kept boxes per image.

PyTorch, ONNX Runtime, OpenVINO and RKNN all end in the same layout, so they all go through this one
function, written in NumPy with OpenCV's NMS: a board without PyTorch keeps the very boxes a PC
keeps, and a score difference between runtimes is a difference in the network, never in how its
output was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mhyolo.defaults import PREDICT_CONF
from mhyolo.infer.arrays import as_numpy

MAX_NMS_CANDIDATES = 30000  # bound on boxes fed to NMS so a degenerate output cannot stall it


@dataclass
class Detections:
    """Kept boxes of one image, in network-input pixels.

    `indices` are the rows of the raw prediction each box came from, so a head that
    predicts something per row (the ball type) can be read for exactly these boxes.
    """

    boxes: np.ndarray  # (n, 4) float32 xyxy
    scores: np.ndarray  # (n,) float32, objectness * class probability
    classes: np.ndarray  # (n,) int64
    indices: np.ndarray  # (n,) int64, rows of pred[b]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def xywh2xyxy(boxes: Any) -> np.ndarray:
    """Centre-size boxes to corner boxes (YOLO outputs centres, NMS wants corners)."""
    boxes = as_numpy(boxes)
    centre, half = boxes[..., :2], 0.5 * boxes[..., 2:4]
    return np.concatenate((centre - half, centre + half), axis=-1)


def xyxy2xywh(boxes: Any) -> np.ndarray:
    """Corner boxes to centre-size boxes (the YOLO label layout)."""
    boxes = as_numpy(boxes)
    return np.concatenate(((boxes[..., :2] + boxes[..., 2:4]) / 2, boxes[..., 2:4] - boxes[..., :2]), axis=-1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of the xyxy `boxes` kept by greedy NMS, highest score first (ties in input order): a box
    is dropped when it overlaps a kept one of its group (all one group when `groups` is None) by more
    than `iou`. Scores must be positive (every caller's are above a confidence threshold). OpenCV's NMS,
    fed widths taken in float64 so each box's corners are exactly its own."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    corners = np.asarray(boxes, np.float64)
    xywh = np.concatenate((corners[:, :2], corners[:, 2:] - corners[:, :2]), axis=1)
    weights = np.asarray(scores, np.float64)
    if groups is None:
        keep = cv2.dnn.NMSBoxes(xywh, weights, 0.0, float(iou))
    else:
        keep = cv2.dnn.NMSBoxesBatched(xywh, weights, np.asarray(groups, np.int32), 0.0, float(iou))
    return np.asarray(keep, np.int64).reshape(-1)


def _as_rows(pred: Any) -> np.ndarray:
    array = as_numpy(pred)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] < 6:
        raise ValueError(f"expected detections shaped (B, N, 5 + nc) with nc >= 1, got {tuple(array.shape)}")
    return array.astype(np.float32, copy=False)  # fp16 exports: NMS and score products are done in float32


def _empty() -> Detections:
    return Detections(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                      classes=np.zeros(0, np.int64), indices=np.zeros(0, np.int64))


def _check_thresholds(conf_thres: float, iou_thres: float) -> None:
    if not 0.0 <= conf_thres <= 1.0:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")


def non_max_suppression(
    pred: Any,
    conf_thres: float = PREDICT_CONF,
    iou_thres: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    max_wh: float = 7680,
) -> list[Detections]:
    """Filter and de-duplicate raw rows `[cx, cy, w, h, obj, cls_0 .. cls_nc-1]` (probabilities; an
    array or a tensor, (B, N, 5 + nc) or one image's (N, 5 + nc)).

    Per image: rows with objectness above `conf_thres` are scored `obj * cls` for their
    best class, rows still above `conf_thres` go through NMS (per class unless
    `agnostic`), and the `max_det` best survive, highest score first. Boxes wider or
    taller than `max_wh` pixels cannot come from a sane input and are dropped.
    """
    _check_thresholds(conf_thres, iou_thres)
    results: list[Detections] = []
    for rows in _as_rows(pred):
        row_ids = np.flatnonzero(rows[:, 4] > np.float32(conf_thres))
        results.append(suppress(row_ids, rows[row_ids], conf_thres, iou_thres, max_det, agnostic, max_wh))
    return results


def suppress(row_ids: np.ndarray, candidates: np.ndarray, conf_thres: float = PREDICT_CONF, iou_thres: float = 0.45,
             max_det: int = 300, agnostic: bool = False, max_wh: float = 7680) -> Detections:
    """NMS of one image's rows whose objectness is above `conf_thres`: `candidates` (n, 5 + nc) float32
    decoded rows and `row_ids`, their numbers in the full prediction, ascending. The second half of
    `non_max_suppression`, shared with the per-level read (`mhyolo.infer.levels`) that finds the
    candidates without decoding every row."""
    _check_thresholds(conf_thres, iou_thres)
    row_ids, candidates = np.asarray(row_ids, np.int64), np.asarray(candidates, np.float32)
    if candidates.size == 0:
        return _empty()
    products = candidates[:, 5:] * candidates[:, 4:5]
    classes = products.argmax(axis=1)
    scores = products[np.arange(len(products)), classes]
    sane = (scores > np.float32(conf_thres)) & (candidates[:, 2:4] <= np.float32(max_wh)).all(axis=1)
    row_ids, candidates, scores, classes = row_ids[sane], candidates[sane], scores[sane], classes[sane]
    if scores.size > MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        row_ids, candidates, scores, classes = row_ids[top], candidates[top], scores[top], classes[top]
    boxes = xywh2xyxy(candidates[:, :4])
    keep = nms(boxes, scores, iou_thres, None if agnostic else classes)[:max_det]  # by decreasing score
    return Detections(boxes=boxes[keep], scores=scores[keep], classes=classes[keep].astype(np.int64),
                      indices=row_ids[keep])
