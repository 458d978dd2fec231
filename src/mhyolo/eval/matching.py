"""Precision and recall at one operating point, the way YOLOv5 reports them.

COCO's mAP summarises the whole ranking; a user also wants to know "if I keep
boxes above confidence c, how many are right and how many balls do I find".
Predictions are matched to ground truth at IoU >= 0.5, then the confidence that
maximises the mean F1 over classes is chosen and P, R and F1 are read there.

Public API:
    match_predictions(gt_boxes, gt_classes, pred_boxes, pred_scores, pred_classes,
                      iou_threshold=0.5) -> np.ndarray[bool]
    best_f1_point(scores, classes, true_positive, instances) -> OperatingPoint
    score_at_precision(scores, true_positive, target) -> float | None
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou


def match_predictions(gt_boxes: np.ndarray, gt_classes: np.ndarray, pred_boxes: np.ndarray,
                      pred_scores: np.ndarray, pred_classes: np.ndarray,
                      iou_threshold: float = 0.5) -> np.ndarray:
    """Mark each prediction of one image as a true positive (True) or not.

    Greedy in descending score: a prediction takes the still-unmatched ground truth
    of its own class with the highest IoU, if that IoU reaches `iou_threshold`.
    Each ground-truth box is taken at most once, so duplicates are false positives.
    """
    tp = np.zeros(len(pred_boxes), dtype=bool)
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return tp
    iou = box_iou(torch.as_tensor(pred_boxes, dtype=torch.float64),
                  torch.as_tensor(gt_boxes, dtype=torch.float64)).numpy()
    iou[pred_classes[:, None] != gt_classes[None, :]] = -1.0  # never match across classes
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.argsort(-pred_scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            tp[i] = True
            taken[j] = True
    return tp


@dataclass(frozen=True)
class OperatingPoint:
    """Per-class P, R and F1 at the chosen confidence (nan for classes without ground truth)."""

    conf: float | None  # None when there is no prediction at all
    precision: np.ndarray  # (K,)
    recall: np.ndarray  # (K,)
    f1: np.ndarray  # (K,)
    mean_f1: float


def best_f1_point(scores: np.ndarray, classes: np.ndarray, true_positive: np.ndarray,
                  instances: np.ndarray) -> OperatingPoint:
    """Find the confidence threshold that maximises the mean F1 over classes with ground truth.

    Keeping predictions with score >= c, every distinct score is a candidate c, so the
    result is exact (no interpolation). Precision with nothing kept is 0. On ties the
    highest threshold wins (fewest boxes for the same quality).
    `instances[k]` is the number of ground-truth boxes of class k.
    """
    k = len(instances)
    has_gt = instances > 0
    nan = np.full(k, np.nan)
    zeros = np.where(has_gt, 0.0, np.nan)
    if len(scores) == 0:
        return OperatingPoint(None, zeros.copy(), zeros.copy(), zeros.copy(), 0.0)

    order = np.argsort(-scores, kind="stable")
    s, c, t = scores[order], classes[order], true_positive[order]
    onehot = c[:, None] == np.arange(k)[None, :]  # (N, K)
    tpc = np.cumsum(onehot & t[:, None], axis=0).astype(np.float64)
    fpc = np.cumsum(onehot & ~t[:, None], axis=0).astype(np.float64)
    # Cut only after the last prediction of each distinct score: "score >= c" keeps ties together.
    cuts = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    tpc, fpc = tpc[cuts], fpc[cuts]

    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tpc + fpc > 0, tpc / (tpc + fpc), 0.0)
        recall = np.where(has_gt, tpc / np.maximum(instances, 1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(has_gt, f1, np.nan)
    precision = np.where(has_gt, precision, np.nan)
    if not has_gt.any():
        return OperatingPoint(None, nan, nan.copy(), nan.copy(), 0.0)

    mean_f1 = np.nanmean(f1, axis=1)
    best = int(mean_f1.argmax())  # first maximum = highest threshold
    return OperatingPoint(float(s[cuts[best]]), precision[best], recall[best], f1[best],
                          float(mean_f1[best]))


def score_at_precision(scores: np.ndarray, true_positive: np.ndarray, target: float) -> float | None:
    """The lowest confidence c whose kept predictions (score >= c) are right at least `target` of the
    time: the threshold that finds the most objects at that precision. None when no c reaches it.

    Every distinct score is a candidate (ties kept together, as in `best_f1_point`); precision is not
    monotone in c, so the lowest qualifying c is taken, not the first one reached from above.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    true_positive = np.asarray(true_positive, dtype=bool).reshape(-1)
    if len(scores) == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], true_positive[order]
    cuts = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    kept = cuts + 1.0
    precision = np.cumsum(t)[cuts] / kept
    good = np.flatnonzero(precision >= target)
    return float(s[cuts[good[-1]]]) if len(good) else None
