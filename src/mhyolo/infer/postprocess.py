"""Post-processing shared by every runtime: raw detection rows -> kept boxes per image.

PyTorch, ONNX Runtime, OpenVINO and RKNN all end in the same tensor layout, so they
all go through this one function; a score difference between runtimes is then a
difference in the network, never in how its output was read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms, box_convert, nms

from mhyolo.defaults import PREDICT_CONF

MAX_NMS_CANDIDATES = 30000  # bound on boxes fed to NMS so a degenerate output cannot stall it


@dataclass
class Detections:
    """Kept boxes of one image, in network-input pixels.

    `indices` are the rows of the raw prediction each box came from, so a head that
    predicts something per row (the ball type) can be read for exactly these boxes.
    """

    boxes: torch.Tensor  # (n, 4) xyxy, float
    scores: torch.Tensor  # (n,) objectness * class probability
    classes: torch.Tensor  # (n,) int64
    indices: torch.Tensor  # (n,) int64, rows of pred[b]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def cpu(self) -> Detections:
        return Detections(self.boxes.cpu(), self.scores.cpu(), self.classes.cpu(), self.indices.cpu())


def xywh2xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre-size boxes to corner boxes (YOLO outputs centres, NMS wants corners)."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy2xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corner boxes to centre-size boxes (the YOLO label layout)."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def _as_tensor(pred: torch.Tensor | np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(pred)) if not isinstance(pred, torch.Tensor) else pred
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 3 or tensor.shape[-1] < 6:
        raise ValueError(f"expected detections shaped (B, N, 5 + nc) with nc >= 1, got {tuple(tensor.shape)}")
    return tensor.float()  # fp16 exports: NMS and score products are done in float32


def _empty(device: torch.device) -> Detections:
    return Detections(
        boxes=torch.zeros((0, 4), device=device),
        scores=torch.zeros((0,), device=device),
        classes=torch.zeros((0,), dtype=torch.int64, device=device),
        indices=torch.zeros((0,), dtype=torch.int64, device=device),
    )


def _check_thresholds(conf_thres: float, iou_thres: float) -> None:
    if not 0.0 <= conf_thres <= 1.0:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")


def non_max_suppression(
    pred: torch.Tensor | np.ndarray,
    conf_thres: float = PREDICT_CONF,
    iou_thres: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    max_wh: float = 7680,
) -> list[Detections]:
    """Filter and de-duplicate raw rows `[cx, cy, w, h, obj, cls_0 .. cls_nc-1]` (probabilities).

    Per image: rows with objectness above `conf_thres` are scored `obj * cls` for their
    best class, rows still above `conf_thres` go through NMS (per class unless
    `agnostic`), and the `max_det` best survive, highest score first. Boxes wider or
    taller than `max_wh` pixels cannot come from a sane input and are dropped.
    """
    _check_thresholds(conf_thres, iou_thres)
    pred = _as_tensor(pred)
    results: list[Detections] = []
    for rows in pred:
        row_ids = torch.nonzero(rows[:, 4] > conf_thres).squeeze(1)
        results.append(suppress(row_ids, rows[row_ids], conf_thres, iou_thres, max_det, agnostic, max_wh))
    return results


def suppress(row_ids: torch.Tensor, candidates: torch.Tensor, conf_thres: float = PREDICT_CONF, iou_thres: float = 0.45,
             max_det: int = 300, agnostic: bool = False, max_wh: float = 7680) -> Detections:
    """NMS of one image's rows whose objectness is above `conf_thres`: `candidates` (n, 5 + nc) float32
    decoded rows and `row_ids`, their numbers in the full prediction, ascending. The second half of
    `non_max_suppression`, shared with the per-level read (`mhyolo.infer.levels`) that finds the
    candidates without decoding every row."""
    _check_thresholds(conf_thres, iou_thres)
    if candidates.numel() == 0:
        return _empty(candidates.device)
    scores, classes = (candidates[:, 5:] * candidates[:, 4:5]).max(dim=1)
    sane = (scores > conf_thres) & (candidates[:, 2:4] <= max_wh).all(dim=1)
    row_ids, candidates, scores, classes = row_ids[sane], candidates[sane], scores[sane], classes[sane]
    if scores.numel() > MAX_NMS_CANDIDATES:
        top = scores.topk(MAX_NMS_CANDIDATES).indices
        row_ids, candidates, scores, classes = row_ids[top], candidates[top], scores[top], classes[top]
    boxes = xywh2xyxy(candidates[:, :4])
    if agnostic:
        keep = nms(boxes, scores, iou_thres)
    else:
        keep = batched_nms(boxes, scores, classes, iou_thres)
    keep = keep[:max_det]  # both return indices sorted by decreasing score
    return Detections(boxes=boxes[keep], scores=scores[keep], classes=classes[keep].long(),
                      indices=row_ids[keep].long())
