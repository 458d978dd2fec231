"""Accuracy of any backend on the validation split, through the one shared `validate`,
so every format is scored with the same pre-processing, NMS and evaluator."""

from __future__ import annotations

from typing import Any

from mhyolo.data.spec import DataSpec
from mhyolo.eval.results import finite
from mhyolo.eval.validate import score_split


def score_backend(backend: Any, spec: DataSpec, imgsz: int, split: str = "val", progress: bool = True,
                  classifier: Any = None, native: Any = None) -> dict[str, float | None]:
    """mAP50, mAP50-95 and, for a model with a type head (or a crop `classifier` behind it), type
    accuracy and typed mAP50, for a model with a mask head mask mAP50 and mAP50-95 (None when nothing
    types the boxes, nothing gives masks, or a value is undefined)."""
    row = score_split(backend, spec, imgsz, split, progress=progress, classifier=classifier, native=native).summary()
    return {key: finite(row.get(key)) for key in ("map50", "map50_95", "cls_accuracy", "typed_map50", "mask_map50",
                                                  "mask_map50_95")}
