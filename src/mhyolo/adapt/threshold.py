"""The keep threshold: the lowest teacher score whose boxes are right at least `precision` of the
time on labelled validation images, judged by the validation matching (`eval.matching`: IoU 0.5,
greedy by score, each ground-truth box taken once; class-agnostic, since the threshold is on
"is this a ball"). The teacher is run exactly as on the targets, so the threshold is its own.
Without labelled validation images, or when no score reaches the precision, the documented
default holds and the record says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mhyolo.adapt.teacher import ImagePredictor, label_images
from mhyolo.data.labels import read_labels
from mhyolo.data.pairing import split_files
from mhyolo.data.spec import DataSpec
from mhyolo.eval.matching import match_predictions, score_at_precision


@dataclass
class Threshold:
    keep: float
    ignore: float
    how: str  # "given", "calibrated" or "default"
    reason: str  # in words, for the report
    images: int = 0  # labelled images it was measured on
    boxes: int = 0  # their ground-truth boxes
    precision: float | None = None  # of the kept boxes at `keep` on those images
    recall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pixel_boxes(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    cx, cy, w, h = labels[:, 1] * width, labels[:, 2] * height, labels[:, 3] * width, labels[:, 4] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).reshape(-1, 4)


def calibrate(teacher: ImagePredictor, spec: DataSpec | None, target: float, default: float, ignore: float,
              classes: list[int] | None = None, progress: bool = True) -> Threshold:
    """The keep threshold from the labelled val split of `spec` (the default without one)."""
    if spec is None or "val" not in spec.splits:
        where = "no labelled data" if spec is None else f"{spec.yaml_path} has no val split"
        return Threshold(default, ignore, "default", f"{where}: the default keep threshold {default}")
    pairs = list(split_files(spec, "val").checked().pairs())
    found = label_images(teacher, [pair.image for pair in pairs], classes, progress, desc="calibrate")
    scores, hits, boxes = [], [], 0
    for pair, item in zip(pairs, found):
        labels, _ = read_labels(pair.label, spec.nc)
        gt = _pixel_boxes(labels, item.shape) if item.error is None else np.zeros((0, 4))
        boxes += len(gt)
        scores.append(item.scores)
        hits.append(match_predictions(gt, np.zeros(len(gt), np.int64), item.boxes, item.scores,
                                      np.zeros(len(item.boxes), np.int64)))
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_hits = np.concatenate(hits) if hits else np.zeros(0, bool)
    measured = {"images": len(pairs), "boxes": boxes}
    keep = score_at_precision(all_scores, all_hits, target)
    if keep is None:
        return Threshold(default, ignore, "default", f"no score reaches precision {target} on {spec.yaml_path} val "
                         f"({len(pairs)} images): the default keep threshold {default}", **measured)
    kept = all_scores >= keep
    precision = float(all_hits[kept].mean())
    recall = float(all_hits[kept].sum() / boxes) if boxes else None
    return Threshold(max(keep, ignore), ignore, "calibrated",
                     f"the lowest score with precision >= {target} on {spec.yaml_path} val "
                     f"({len(pairs)} images, {boxes} boxes)", precision=precision, recall=recall, **measured)
