"""How the passes of multi-scale inference become one set of boxes: a registry of merge rules.

Each pass (one input size, maybe horizontally flipped) gives boxes already in the original
image's pixels; a rule turns an image's passes into one `Prediction`. Rules, one class each,
registered by name with `register_merge`:

* `nms`: the predictor's NMS (`postprocess.nms`) over every pass at once, per class unless the predictor is
  class-agnostic (the same NMS as sliced inference, `slicing.merge_predictions`).
* `wbf`: weighted box fusion (`ensemble-boxes`, MIT licence): boxes of the same class that
  overlap by more than the IoU threshold are averaged, weighted by score, rather than the best
  one kept. The library works in coordinates normalised to [0, 1] and scores a fused box by
  its members' mean (`avg`, divided by the passes that missed it: agreement between passes
  counts) or their best (`max`), among its `conf_type`s. It does not say which boxes went into
  which fused box, so the fused box's type (and, when class-agnostic, its class) is that of
  its highest-scoring member, found again as the best-scoring input box of its class that
  overlaps it by the IoU threshold.
* `size`: each pass keeps only the boxes whose size at that pass's input (the box's longer side
  in the pixels the network saw) lies in the band the model sees well: at least `band[0]` px
  on every scale but the largest (there the tiny ones are what that scale is for), at most
  `band[1]` px on every scale but the smallest (large objects are left to it); then `then`
  (`wbf` or `nms`) merges what is left. Scores from different scales are not comparable as they
  are: a small input puts confident boxes on objects it cannot resolve, which plain NMS then
  prefers to the larger input's correct ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.arrays import box_iou
from mhyolo.infer.predictor import Prediction
from mhyolo.infer.slicing import merge_predictions

WBF_IOU = 0.55  # ensemble-boxes' default match threshold
WBF_CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
DEFAULT_BAND = (8.0, 160.0)  # px at a pass's input: keep boxes from 8 px up; larger than 160 only on the smallest scale


@dataclass(frozen=True)
class ScalePass:
    """One pass of an image: its detections in original pixels and the scale it ran at."""

    prediction: Prediction
    size: int  # the pass's input size (long side, network pixels)
    ratio: float  # network pixels per original pixel at this scale
    flipped: bool = False
    smallest: bool = True  # the smallest of the run's scales
    largest: bool = True  # the largest of the run's scales


@dataclass(frozen=True)
class MergeOptions:
    """What the rules read: their own settings and the predictor's NMS settings."""

    iou: float | None = None  # match threshold; None: the rule's default (nms: `predictor_iou`, wbf: 0.55)
    wbf_conf: str = "avg"  # how WBF scores a fused box (`WBF_CONF_TYPES`)
    skip: float = 0.0  # WBF ignores boxes scored below this (each pass already dropped those below --conf)
    band: tuple[float, float] = DEFAULT_BAND  # size rule: [min, max] box side at a pass's input, px
    then: str = "wbf"  # size rule: what merges the boxes left in the band
    predictor_iou: float = 0.45
    max_det: int = 300
    agnostic: bool = False

    def __post_init__(self) -> None:
        if self.iou is not None and not 0.0 < self.iou <= 1.0:
            raise ConfigError(f"--merge-iou {self.iou}: must be in (0, 1]")
        if self.wbf_conf not in WBF_CONF_TYPES:
            raise ConfigError(f"--wbf-conf {self.wbf_conf!r}: must be one of {', '.join(WBF_CONF_TYPES)}")
        if not 0.0 <= self.skip <= 1.0:
            raise ConfigError(f"--wbf-skip {self.skip}: must be in [0, 1]")
        low, high = self.band
        if not 0.0 <= low < high:
            raise ConfigError(f"--size-band {low:g} {high:g}: needs 0 <= MIN < MAX (pixels at a scale's input)")
        if self.then not in MERGE_RULES or MERGE_RULES[self.then].wraps:
            choices = ", ".join(k for k, rule in MERGE_RULES.items() if not rule.wraps)
            raise ConfigError(f"--size-then {self.then!r}: must be one of {choices}")


class MergeRule(ABC):
    """One way of turning an image's passes into one `Prediction`."""

    key: ClassVar[str] = ""
    wraps: ClassVar[bool] = False  # filters passes and hands them to another rule

    @abstractmethod
    def merge(self, passes: Sequence[ScalePass], options: MergeOptions) -> Prediction:
        """The merged detections of one image (best first, at most `options.max_det`)."""


MERGE_RULES: dict[str, MergeRule] = {}


def register_merge(cls: type[MergeRule]) -> type[MergeRule]:
    """Class decorator: make a merge rule available under its `key`."""
    if not cls.key:
        raise ValueError(f"{cls.__name__} needs a key")
    MERGE_RULES[cls.key] = cls()
    return cls


def merge_rule(name: str) -> MergeRule:
    """The rule registered as `name`; a clear error naming it otherwise."""
    if name not in MERGE_RULES:
        raise ConfigError(f"--merge {name!r}: must be one of {', '.join(MERGE_RULES)}")
    return MERGE_RULES[name]


@register_merge
class NmsMerge(MergeRule):
    """Every pass's boxes together through the one NMS (per class unless agnostic)."""

    key = "nms"

    def merge(self, passes: Sequence[ScalePass], options: MergeOptions) -> Prediction:
        iou = options.predictor_iou if options.iou is None else options.iou
        return merge_predictions([p.prediction for p in passes], passes[0].prediction.image_shape, iou,
                                 options.max_det, options.agnostic, merge="nms")


@register_merge
class WbfMerge(MergeRule):
    """Weighted box fusion of every pass's boxes (ensemble-boxes), types from the best member."""

    key = "wbf"

    def merge(self, passes: Sequence[ScalePass], options: MergeOptions) -> Prediction:
        from ensemble_boxes import weighted_boxes_fusion  # imported here: it loads numba

        iou = WBF_IOU if options.iou is None else options.iou
        pool = Prediction.concatenate([p.prediction for p in passes])
        height, width = pool.image_shape
        scale = np.array([width, height, width, height], np.float32)
        groups = np.zeros(len(pool), np.int64) if options.agnostic else pool.class_ids
        boxes_list, scores_list, labels_list = [], [], []
        start = 0
        for p in passes:
            end = start + len(p.prediction)
            normalised = np.clip(pool.boxes[start:end] / scale, 0.0, 1.0)
            usable = (normalised[:, 2] > normalised[:, 0]) & (normalised[:, 3] > normalised[:, 1])  # no zero area
            boxes_list.append(normalised[usable])
            scores_list.append(pool.scores[start:end][usable])
            labels_list.append(groups[start:end][usable])
            start = end
        fused, scores, labels = weighted_boxes_fusion(boxes_list, scores_list, labels_list, iou_thr=iou,
                                                      skip_box_thr=options.skip, conf_type=options.wbf_conf)
        fused = (np.asarray(fused, np.float32).reshape(-1, 4) * scale)[:options.max_det]
        scores = np.asarray(scores, np.float32)[:options.max_det]
        labels = np.asarray(labels).astype(np.int64)[:options.max_det]
        members = best_members(fused, labels, pool.boxes, pool.scores, groups, iou)
        merged = pool.subset(members)  # class names and types of each fused box's best member
        merged.boxes, merged.scores = fused, scores
        if not options.agnostic:
            merged.class_ids = labels
        return merged


@register_merge
class SizeBandMerge(MergeRule):
    """Each pass keeps the boxes whose size at its own input lies in the band; `then` merges them."""

    key = "size"
    wraps = True

    def merge(self, passes: Sequence[ScalePass], options: MergeOptions) -> Prediction:
        return MERGE_RULES[options.then].merge([in_band(p, options.band) for p in passes], options)


def in_band(scale_pass: ScalePass, band: tuple[float, float]) -> ScalePass:
    """`scale_pass` without the boxes its scale does not see well: smaller than `band[0]` px at its
    input (except on the largest scale) or larger than `band[1]` px (except on the smallest)."""
    low, high = band
    boxes = scale_pass.prediction.boxes
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale_pass.ratio
    keep = np.ones(len(boxes), bool)
    if not scale_pass.largest:
        keep &= side >= low
    if not scale_pass.smallest:
        keep &= side <= high
    return replace(scale_pass, prediction=scale_pass.prediction.subset(keep))


def best_members(fused: np.ndarray, labels: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                 groups: np.ndarray, iou: float) -> np.ndarray:
    """For each fused box, the index of the best-scoring input box of its group overlapping it by at
    least `iou` (the cluster's strongest member; the most overlapping box of its group if none does)."""
    if not len(fused):
        return np.zeros(0, np.int64)
    overlap = box_iou(fused, boxes)
    overlap[labels[:, None] != groups[None, :]] = -1.0
    candidates = np.where(overlap >= iou - 1e-6, scores[None, :], -1.0)
    chosen = candidates.argmax(axis=1)
    none = candidates.max(axis=1) < 0
    chosen[none] = overlap[none].argmax(axis=1)
    return chosen.astype(np.int64)
