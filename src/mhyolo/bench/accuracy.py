"""Accuracy of any backend on the validation split, through the one shared `validate`,
so every format is scored with the same pre-processing, NMS and evaluator."""

from __future__ import annotations

import math
from typing import Any

from mhyolo.data.spec import DataSpec
from mhyolo.eval.validate import score_split


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def score_backend(backend: Any, spec: DataSpec, imgsz: int, split: str = "val", progress: bool = True,
                  classifier: Any = None, native: Any = None) -> dict[str, float | None]:
    """mAP50, mAP50-95 and, for a model with a type head (or a crop `classifier` behind it), type
    accuracy and typed mAP50 (None when nothing types the boxes or a value is undefined)."""
    result = score_split(backend, spec, imgsz, split, progress=progress, classifier=classifier, native=native)
    types = result.types
    return {"map50": _finite(result.metrics.map50), "map50_95": _finite(result.metrics.map50_95),
            "cls_accuracy": _finite(types.cls_accuracy) if types else None,
            "typed_map50": _finite(types.typed_map50) if types else None}
