"""Classification metrics for the ball-type head, in plain numpy.

Public API:
    confusion_matrix(y_true, y_pred, num_classes) -> np.ndarray  # (K, K) int64, rows = truth
    classification_report(y_true, y_pred, names) -> dict
        {"accuracy": float, "names": [...], "confusion_matrix": (K, K) ndarray,
         "per_class": {name: {"precision", "recall", "f1", "support"}},
         "macro": {"precision", "recall", "f1"}}

A class that is never predicted has precision 0; a class that never occurs has
recall 0 and support 0 and is left out of the macro averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _labels(values: Sequence[int] | np.ndarray, num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a flat list of class ids, got shape {arr.shape}")
    if arr.size and not np.all(arr == np.round(arr)):
        raise ValueError(f"{what}: class ids must be whole numbers")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if len(bad):
        raise ValueError(f"{what}: class id {int(bad[0])} is outside 0..{num_classes - 1}")
    return arr


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Count (truth, prediction) pairs: entry [i, j] = samples of class i predicted as j."""
    t = _labels(y_true, num_classes, "y_true")
    p = _labels(y_pred, num_classes, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def classification_report(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                          names: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix."""
    if not names:
        raise ValueError("classification_report needs at least one class name")
    cm = confusion_matrix(y_true, y_pred, len(names))
    total = int(cm.sum())
    if total == 0:
        raise ValueError("classification_report: no samples")
    correct = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(correct), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(correct.sum() / total),
        "names": list(names),
        "confusion_matrix": cm,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(names)
        },
        "macro": {"precision": float(precision[present].mean()), "recall": float(recall[present].mean()),
                  "f1": float(f1[present].mean())},
    }
