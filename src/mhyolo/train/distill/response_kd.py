"""Response distillation (seed 004): the coupled student's head outputs learn the teacher's, cell by
cell and anchor by anchor (the teacher, e.g. the decoupled-head YOLOv5, has the same anchors, strides
and output layout).

L_kd = λ · L_cls + (1 − λ) · L_box, total = L_gt + α · L_kd, with λ the seed's task weight.
* L_cls: mean squared difference of probabilities: objectness (sigmoid) over every cell, where the
  background matters as much as the balls; class (sigmoid, when nc > 1) and type (softmax, when both
  have a per-object type head) weighted by the teacher's objectness, so the cells where the teacher
  sees an object dominate.
* L_box: YOLOv5 decodes each of the four box numbers through a sigmoid (xy = 2σ − 0.5, wh = (2σ)² ·
  anchor), so each coordinate is a value in (0, 1). We read each as a Bernoulli distribution
  {σ, 1 − σ} — the two-way softmax of (t, 0), which is the seed's "soft-maxed outputs" for one
  number — and take KL(student ‖ teacher) as the seed writes it, summed over the four coordinates,
  weighted by the teacher's objectness. It is zero exactly when the decoded boxes agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mhyolo.config import from_dict
from mhyolo.errors import ConfigError
from mhyolo.train.terms import BuildContext, LossTerm, Step, TermResult, register_term

EPS = 1e-7


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(σ(s) ‖ σ(t)) elementwise, from logits (stable: log σ via logsigmoid)."""
    p = torch.sigmoid(student_logits)
    log_p, log_not_p = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    log_q, log_not_q = F.logsigmoid(teacher_logits), F.logsigmoid(-teacher_logits)
    return p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(EPS)


def response_losses(student: torch.Tensor, teacher: torch.Tensor, nc: int,
                    student_types: torch.Tensor | None = None,
                    teacher_types: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_cls, L_box) of one level: raw (B, na, H, W, 5 + nc) outputs of student and teacher, and
    optionally per-object type logits (B, na, H, W, T)."""
    teacher = teacher.detach().to(student.dtype)
    seen = torch.sigmoid(teacher[..., 4])  # the teacher's objectness: where to listen to it
    cls = F.mse_loss(torch.sigmoid(student[..., 4]), seen)
    if nc > 1:
        cls = cls + weighted_mean(
            (torch.sigmoid(student[..., 5:]) - torch.sigmoid(teacher[..., 5:])).pow(2).mean(-1), seen)
    if student_types is not None and teacher_types is not None:
        cls = cls + weighted_mean(
            (student_types.softmax(-1) - teacher_types.detach().to(student_types.dtype).softmax(-1)).pow(2).mean(-1),
            seen)
    box = weighted_mean(bernoulli_kl(student[..., :4], teacher[..., :4]).sum(-1), seen)
    return cls, box


@dataclass
class ResponseKDSettings:
    weight: float = 1.0  # α
    task_weight: float = 0.5  # λ: classification against box


class ResponseKDTerm(LossTerm):
    columns = ("kd_cls", "kd_box")
    needs_teacher = True

    def __init__(self, settings: ResponseKDSettings, nc: int, types: bool) -> None:
        super().__init__(settings.weight)
        self.task_weight = settings.task_weight
        self.nc = nc
        self.types = types

    def compute(self, step: Step) -> TermResult:
        taught, _ = step.taught
        cls = box = step.targets.new_zeros(())
        student_types = step.outputs.get("type") if self.types else None
        teacher_types = taught.get("type") if self.types else None
        for level, (s, t) in enumerate(zip(step.outputs["detection"], taught["detection"])):
            level_cls, level_box = response_losses(
                s, t, self.nc, student_types[level] if student_types is not None else None,
                teacher_types[level] if teacher_types is not None else None)
            cls, box = cls + level_cls, box + level_box
        kd = self.task_weight * cls + (1 - self.task_weight) * box
        return TermResult(self.weight * kd * step.batch, {"kd_cls": cls.detach(), "kd_box": box.detach()})


@register_term("response_kd")
def build_response_kd(context: BuildContext, options: dict[str, Any]) -> ResponseKDTerm:
    settings = from_dict(ResponseKDSettings, options, "objective.terms.response_kd")
    if not 0.0 <= settings.task_weight <= 1.0:
        raise ConfigError(f"objective.terms.response_kd.task_weight must be in [0, 1], got {settings.task_weight}")
    if context.teacher is None:
        raise ConfigError("objective.terms: response_kd learns from a teacher: give one (--teacher WEIGHTS)")
    context.teacher.check_lines_up(context.model, anchors=True)
    types = "type" in context.model.heads and "type" in context.teacher.model.heads
    if types and context.model.type_names != context.teacher.model.type_names:
        raise ConfigError(f"teacher {context.teacher.source}: types {context.teacher.model.type_names} differ from "
                          f"the student's {context.model.type_names}")
    return ResponseKDTerm(settings, context.model.detect.nc, types)
