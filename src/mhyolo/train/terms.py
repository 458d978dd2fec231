"""Loss terms: what the trainer minimises, one small class per term.

The objective is the sum of its terms. Each term is a module (so any layer it owns, such as a
distillation adapter, trains with the student and is reduced across DDP ranks), has a weight,
names the values it reports (one `results.csv` column and progress-bar field each) and may
ask for intermediate feature maps by row index. A new kind of term is one class registered
with `@register_term("name")` and switched on in the training YAML:

    objective:
      terms:
        name: {weight: 0.01, ...}   # the term's own settings dataclass, unknown keys refused
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import nn

from mhyolo.errors import ConfigError
from mhyolo.model.yolo import YoloModel
from mhyolo.train.assign import LevelTargets
from mhyolo.train.loss import DetectionLoss, LossConfig
from mhyolo.train.type_loss import ImageTypeLoss, ObjectTypeLoss


@dataclass
class Step:
    """What one training step gives every term: the student's raw head outputs, the feature maps
    the terms asked for, the batch's targets and the images; targets are assigned to anchors once."""

    outputs: dict[str, Any]
    targets: torch.Tensor
    features: dict[int, torch.Tensor] = field(default_factory=dict)
    images: torch.Tensor | None = None
    assigner: Callable[[Sequence[torch.Tensor], torch.Tensor], list[LevelTargets]] | None = None
    teacher: Any = None  # a `distill.Teacher`, run once per step on the same images when a term asks
    teacher_rows: tuple[int, ...] = ()
    ignore: torch.Tensor | None = None  # (M, 5) ignore regions [image, cx, cy, w, h]; objectness leaves them out

    @property
    def batch(self) -> int:
        return int(self.outputs["detection"][0].shape[0])

    @cached_property
    def assigned(self) -> list[LevelTargets]:
        if self.assigner is None:
            raise ConfigError("no target assigner: the objective has no detection term")
        return self.assigner(self.outputs["detection"], self.targets)

    @cached_property
    def taught(self) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
        """The teacher's raw outputs and feature rows for this batch (computed once, no gradient)."""
        if self.teacher is None or self.images is None:
            raise ConfigError("a distillation term needs a teacher (--teacher / teacher: in the training YAML)")
        return self.teacher.run(self.images, self.teacher_rows)


@dataclass
class TermResult:
    loss: torch.Tensor  # this term's contribution to the total (weighted, scaled by the batch size)
    logged: dict[str, torch.Tensor]  # one detached value per reported column


@dataclass
class BuildContext:
    """What a term may need to build itself."""

    model: YoloModel
    loss: LossConfig
    imgsz: int
    detector_trains: bool = True
    type_weight: float = 1.0
    type_label_smoothing: float = 0.0
    teacher: Any = None  # a `distill.Teacher` when the run has one


class LossTerm(nn.Module):
    """One part of the objective. Subclasses set `columns` and implement `compute`."""

    columns: ClassVar[tuple[str, ...]] = ()
    feature_rows: tuple[int, ...] = ()  # rows whose outputs this term reads from `Step.features`
    teacher_rows: tuple[int, ...] = ()  # the teacher's rows it reads from `Step.taught`
    needs_teacher: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, step: Step) -> TermResult:
        if self.weight == 0.0:  # switched off: nothing computed, nothing reaches the gradient
            zero = step.targets.new_zeros(())
            return TermResult(zero, {name: zero for name in self.columns})
        return self.compute(step)

    def compute(self, step: Step) -> TermResult:
        raise NotImplementedError


TermFactory = Callable[[BuildContext, dict[str, Any]], LossTerm]
TERMS: dict[str, TermFactory] = {}


def register_term(name: str) -> Callable[[TermFactory], TermFactory]:
    """Make a term available under `name` in `objective.terms` of the training YAML."""

    def wrap(factory: TermFactory) -> TermFactory:
        if name in TERMS:
            raise ValueError(f"loss term '{name}' is registered twice")
        TERMS[name] = factory
        return factory
    return wrap


# ------------------------------------------------------------------------ built-in terms
class DetectionTerm(LossTerm):
    """YOLOv5's detection loss (box, objectness, and class when nc > 1); it also assigns targets to
    anchors for every other term. Weight 0 while the detector is frozen."""

    columns = ("box", "obj", "cls")

    def __init__(self, model: YoloModel, loss: LossConfig, imgsz: int, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.loss = DetectionLoss(model.detect.anchors, model.detect.nc, loss, imgsz)

    def compute(self, step: Step) -> TermResult:
        total, parts = self.loss(step.outputs["detection"], step.targets, step.assigned, ignore=step.ignore)
        return TermResult(self.weight * total, parts)


class TypeTerm(LossTerm):
    """Cross-entropy of the type heads: per object on the assigned anchors, and/or per image."""

    columns = ("type",)

    def __init__(self, model: YoloModel, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        heads = model.heads
        self.object_type = ObjectTypeLoss(label_smoothing) if "type" in heads else None
        self.image_type = ImageTypeLoss(label_smoothing) if "image_type" in heads else None

    def compute(self, step: Step) -> TermResult:
        type_loss = step.targets.new_zeros(())
        if self.object_type is not None:
            type_loss = type_loss + self.object_type(step.outputs["type"], step.assigned)
        if self.image_type is not None:
            type_loss = type_loss + self.image_type(step.outputs["image_type"], step.targets)
        return TermResult(self.weight * type_loss * step.batch, {"type": type_loss.detach()})


def standard_terms(context: BuildContext) -> dict[str, LossTerm]:
    """Detection and type terms. While the detector is frozen only the type heads learn, at full
    weight; otherwise the type term is weighted by `type_weight` against detection."""
    detection_weight = 1.0 if context.detector_trains else 0.0
    type_weight = context.type_weight if context.detector_trains else 1.0
    return {"detection": DetectionTerm(context.model, context.loss, context.imgsz, detection_weight),
            "type": TypeTerm(context.model, type_weight, context.type_label_smoothing)}


def build_extra_terms(context: BuildContext, settings: dict[str, dict[str, Any]]) -> dict[str, LossTerm]:
    """The registered terms switched on in `objective.terms`, in the order written."""
    terms: dict[str, LossTerm] = {}
    for name, options in settings.items():
        if name in ("detection", "type"):
            raise ConfigError(f"objective.terms: '{name}' is always on; set its weight with objective.type_weight")
        if name not in TERMS:
            raise ConfigError(f"objective.terms: unknown loss term '{name}' (registered: "
                              f"{', '.join(sorted(TERMS)) or 'none'})")
        terms[name] = TERMS[name](context, dict(options or {}))
    return terms
