"""A validation result with every figure set to one value, for tests that replace the trainer's
validation to drive its fitness (early stopping, best checkpoints)."""

from __future__ import annotations

from types import SimpleNamespace

from mhyolo.eval.validate import ValidationResult


def validation_scoring(value: float) -> ValidationResult:
    """What `validate` returns for a detector whose precision, recall and mAPs all equal `value`."""
    metrics = SimpleNamespace(precision=value, recall=value, map50=value, map50_95=value)
    return ValidationResult(metrics=metrics, types=None,  # type: ignore[arg-type]
                            parts={"detection": {"precision": value, "recall": value, "map50": value,
                                                 "map50_95": value}})
