"""One vocabulary for scores: the metrics every table shows (key, label, which way is better), the one
fitness that chooses between models, and the flat results row that `val --json`, the pipeline's
report, the cross-validation, the benchmark and `quantize` all read.

A scorer (detection, types, negatives, size bins, later masks) reports its own part; `flatten` joins the
parts into one row and refuses a key two parts both claim, so no figure silently replaces another (the
type part's image count once replaced the detection's in `val --json`). A table names a metric by its
key and takes the label from here, so "type acc" means the same column everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mhyolo.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A figure a table can show: its key in a results row, its column label, whether larger is better
    (None where neither is: a count), and the digits it is printed with."""

    key: str
    label: str
    higher_is_better: bool | None = True
    digits: int = 3

    def cell(self, value: Any) -> str:
        """The value as a table cell; a dash for a value that is missing or undefined."""
        number = finite(value)
        return "–" if number is None else f"{number:.{self.digits}f}"


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the vocabulary (a new scorer registers the figures it reports)."""
    if metric.key in METRICS and METRICS[metric.key] != metric:
        raise ConfigError(f"metric {metric.key!r} is registered already as {METRICS[metric.key]}")
    METRICS[metric.key] = metric
    return metric


for _metric in (
        Metric("map50", "mAP50"), Metric("map50_95", "mAP50-95"),
        Metric("precision", "P"), Metric("recall", "R"),
        Metric("cls_accuracy", "type acc"), Metric("image_accuracy", "type acc (images)"),
        Metric("typed_map50", "typed mAP50"), Metric("typed_map50_95", "typed mAP50-95"),
        Metric("detection_recall", "detection recall"),
        Metric("mask_map50", "mask mAP50"), Metric("mask_map50_95", "mask mAP50-95"),
        Metric("false_positives_per_negative_image", "FP / negative image", higher_is_better=False),
        Metric("fitness", "fitness"),
        Metric("latency_ms", "ms", higher_is_better=False, digits=1)):
    register_metric(_metric)


def metric(key: str) -> Metric:
    """The registered metric `key` (a table asking for an unknown key is a programming error)."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"no metric {key!r} is registered (known: {', '.join(METRICS)})") from None


def label(key: str) -> str:
    return metric(key).label


def columns(*keys: str) -> tuple[tuple[str, str], ...]:
    """(key, label) pairs for a table's columns, in the order given."""
    return tuple((key, label(key)) for key in keys)


def finite(value: Any) -> float | None:
    """A plain float, or None for a missing, non-numeric or NaN value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def yolo_fitness(map50: float, map50_95: float) -> float:
    """YOLOv5's model-selection score: mostly mAP@0.5:0.95."""
    return 0.1 * map50 + 0.9 * map50_95


def fitness(row: Mapping[str, Any]) -> float:
    """What chooses between models and checkpoints: YOLOv5's fitness of the typed mAP when the model
    types its balls (detection and type judged together), else of the detection mAP. A typed mAP that
    is undefined (no typed ground truth) counts as absent."""
    typed50, typed = finite(row.get("typed_map50")), finite(row.get("typed_map50_95"))
    if typed50 is not None and typed is not None:
        return yolo_fitness(typed50, typed)
    return yolo_fitness(float(row["map50"]), float(row["map50_95"]))


def flatten(parts: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Join named parts (`("detection", {...}), ("types", {...})`) into one row, in order. A key a later
    part shares with an earlier one is kept under `<part>_<key>` instead, so every figure survives with
    a name that says whose it is."""
    row: dict[str, Any] = {}
    for name, part in parts:
        for key, value in part.items():
            row[f"{name}_{key}" if key in row else key] = value
    return row


def select(part: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The figures a table keeps from a results part or row, in the order asked (a key it lacks is a
    programming error, raised with the keys it has)."""
    try:
        return {key: part[key] for key in keys}
    except KeyError as exc:
        raise KeyError(f"no figure {exc.args[0]!r} among {', '.join(part)}") from None


def seen_type_scores(types: Mapping[str, Any], trained: list[str]) -> dict[str, Any]:
    """Type figures over the matched boxes whose true type was in training, for a held-out source (a
    type the model never saw cannot be named): type accuracy and the number of such boxes, and the typed
    mAP only when every type held out was seen."""
    names = types["type_names"]
    matrix = types["confusion_matrix"]  # rows: true type, matched boxes
    seen = [i for i, name in enumerate(names) if name in trained]
    matched = sum(sum(matrix[i]) for i in seen)
    correct = sum(matrix[i][i] for i in seen)
    present = [i for i, row in enumerate(matrix) if sum(row)]
    all_seen = all(i in seen for i in present)
    return {"cls_accuracy": correct / matched if matched else None, "typed_boxes": matched,
            "typed_map50": types.get("typed_map50") if all_seen else None,
            "typed_map50_95": types.get("typed_map50_95") if all_seen else None}
