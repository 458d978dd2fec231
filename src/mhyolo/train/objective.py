"""What the trainer minimises: the sum of the loss terms (`mhyolo.train.terms`).

The detection and type terms are always there; `objective.terms` in the training YAML switches
on any other registered term. The trainer only sees named values: the total to backpropagate
and one logged value per column, so a new term needs no change to the loop, the progress bar
or `results.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mhyolo.errors import ConfigError
from mhyolo.model.yolo import YoloModel
from mhyolo.train.loss import LossConfig
from mhyolo.train.terms import BuildContext, LossTerm, Step, build_extra_terms, standard_terms


@dataclass
class ObjectiveConfig:
    type_weight: float = 1.0  # lambda in loss = detection + lambda * type (joint training)
    type_label_smoothing: float = 0.0
    terms: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra registered terms and their settings


class TrainingObjective(nn.Module):
    def __init__(self, model: YoloModel, loss: LossConfig, imgsz: int, config: ObjectiveConfig | None = None,
                 detector_trains: bool = True, teacher: Any = None) -> None:
        super().__init__()
        self.config = config or ObjectiveConfig()
        if self.config.terms:
            import mhyolo.train.distill  # noqa: F401 - registers the distillation terms
            import mhyolo.train.mask_loss  # noqa: F401 - registers the mask term
        context = BuildContext(model=model, loss=loss, imgsz=imgsz, detector_trains=detector_trains,
                               type_weight=self.config.type_weight,
                               type_label_smoothing=self.config.type_label_smoothing, teacher=teacher)
        terms: dict[str, LossTerm] = standard_terms(context)
        terms.update(build_extra_terms(context, self.config.terms))
        # a list, not a ModuleDict: term names such as "type" would clash with nn.Module attributes
        self.term_names: tuple[str, ...] = tuple(terms)
        self.terms = nn.ModuleList(terms.values())
        columns = [column for term in self.terms for column in term.columns]
        if len(set(columns)) != len(columns):
            raise ConfigError(f"loss terms report clashing columns: {columns}")
        self.part_names: tuple[str, ...] = tuple(columns)
        taught = [name for name, term in zip(self.term_names, self.terms) if term.needs_teacher]
        if taught and teacher is None:
            raise ConfigError(f"objective.terms: {', '.join(taught)} learn(s) from a teacher: give one "
                              "(--teacher WEIGHTS, or teacher: in the training YAML)")
        if teacher is not None and not taught:
            raise ConfigError("a teacher is given but no loss term learns from it: switch on objective.terms "
                              "imitation and/or response_kd")
        self.teacher = teacher  # not a submodule: nothing that trains, saves or changes mode reaches it
        self.teacher_rows = tuple(sorted({row for term in self.terms for row in term.teacher_rows}))

    @property
    def feature_rows(self) -> tuple[int, ...]:
        """Rows whose feature maps some term reads: the training module captures them in its forward."""
        return tuple(sorted({row for term in self.terms for row in term.feature_rows}))

    def term(self, name: str) -> LossTerm:
        return self.terms[self.term_names.index(name)]

    def forward(self, raw: dict[str, Any], targets: torch.Tensor, features: dict[int, torch.Tensor] | None = None,
                images: torch.Tensor | None = None,
                ignore: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        step = Step(outputs=raw, targets=targets, features=features or {}, images=images,
                    assigner=self.term("detection").loss.assign, teacher=self.teacher,
                    teacher_rows=self.teacher_rows, ignore=ignore)
        total: torch.Tensor | None = None
        parts: dict[str, torch.Tensor] = {}
        for term in self.terms:
            result = term(step)
            total = result.loss if total is None else total + result.loss
            parts.update(result.logged)
        assert total is not None  # the detection term is always there
        return total, parts
