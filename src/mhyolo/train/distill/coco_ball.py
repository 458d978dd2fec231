"""Keeping what COCO knows about balls while fine-tuning ("learning without forgetting", Li & Hoiem 2017).

The ball detector starts from the official COCO YOLOv5n ("sports ball", `class_init: 32`), then
learns a few hundred mostly large balls and forgets the small ones COCO had learnt. This term keeps,
on every training image, the student's ball score close to what the untouched COCO model scores
there: per level, anchor and cell, COCO's "sports ball" score t = σ(objectness) · σ(class-32 logit),
the number COCO's own post-processing ranks (`infer.postprocess.suppress`: obj · cls).

The student's score is the same product, as `Detect.inference` and `suppress` compute it:
p = σ(obj) · σ(cls) at nc = 1, σ(obj) · max_k σ(cls_k) at nc > 1. At nc = 1 the class column gets no
loss (`train/loss.py`) and this term sends it none either (detached): were this term the only thing
moving it, it could lower the ball score where the labels show a ball COCO misses, through a column
the detection loss cannot see, and undo the detection. The objectness logit carries the term there.

Loss per cell: KL(t ‖ p) = BCE(p, t) − H(t), the soft-target binary cross-entropy less the target's
entropy. Its gradient is BCE's, but its value is 0 exactly where the student scores as COCO does, so
the logged column reads as "how far from COCO" instead of being dominated by COCO's own uncertainty,
which no student can change. Mean over every cell and anchor of the levels both models share (the
normalisation of YOLOv5's objectness loss: at 320, weight 1 is about the labels' objectness target per
P3 cell), with a per-cell weight 1 + focus · t: COCO is mostly zeros, and where both say "no ball" KL
and its gradient vanish by themselves, so the cells that count are the disagreements. Of those, a ball
COCO sees and the student lost (what the term is for) counts 1 + focus · t, and a ball the student
learnt from the labels that COCO does not see counts 1, so the term leans on remembering rather than
on unlearning the new balls. COCO's score on the ball photos at 320 stays below ~0.3, so the default
focus 10 makes its ball cells count up to ~4 times.

The `class_init: 32` start is near this term's minimum, not at it: its objectness logit is COCO's
obj + class-32 logits, and σ(a + b) ≥ σ(a) · σ(b) overstates COCO where COCO is confident.

The COCO model is a frozen passenger (`distill.Teacher`): loaded once, never a submodule of what
trains (no optimizer, DDP, `.train()` or checkpoint reaches it), no gradient, eval mode on every call,
run on the student's own augmented batch. Only levels whose stride both models have are compared
(a student with an extra stride-4 level keeps it out of the term), and their anchors must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mhyolo.config import from_dict
from mhyolo.errors import ConfigError, WeightsError
from mhyolo.model.heads import DetectionHead
from mhyolo.model.weights import load_model, resolve_weights
from mhyolo.train.distill.teacher import Teacher
from mhyolo.train.terms import BuildContext, LossTerm, Step, TermResult, register_term

WHERE = "objective.terms.coco_ball"
SPORTS_BALL = 32  # COCO's class index of "sports ball"


@dataclass
class CocoBallSettings:
    weight: float = 1.0
    weights: str = "yolov5n.pt"  # the untouched reference model (official COCO YOLOv5n)
    ball_class: int = SPORTS_BALL  # the reference's ball class
    levels: str | list[int] = "all"  # "all": every stride both models have; or a list of strides, e.g. [8]
    focus: float = 10.0  # per-cell weight 1 + focus x COCO's score


def reference_score(raw: torch.Tensor, ball_class: int) -> torch.Tensor:
    """The reference's ball score σ(obj) · σ(cls[ball_class]) per anchor and cell: raw (B, na, H, W, 5 + nc)."""
    return torch.sigmoid(raw[..., 4]) * torch.sigmoid(raw[..., 5 + ball_class])


def student_log_score(raw: torch.Tensor, class_live: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p, log(1 − p)) of the student's ball score p = σ(obj) · σ(best class): the score inference
    ranks. `class_live` False (nc = 1: the class column gets no loss) keeps the gradient off the class
    column. Computed from log-sigmoids, so tiny scores keep their gradient."""
    cls = raw[..., 5:].max(dim=-1).values
    if not class_live:
        cls = cls.detach()
    log_p = F.logsigmoid(raw[..., 4]) + F.logsigmoid(cls)
    log_not_p = torch.log((-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny))
    return log_p, log_not_p


def bernoulli_kl_to(target: torch.Tensor, log_p: torch.Tensor, log_not_p: torch.Tensor) -> torch.Tensor:
    """KL(t ‖ p) of Bernoulli distributions, elementwise: BCE(p, t) − H(t); 0 where p = t."""
    return (torch.special.xlogy(target, target) - target * log_p
            + torch.special.xlogy(1 - target, 1 - target) - (1 - target) * log_not_p)


def coco_ball_loss(student: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                   pairs: Sequence[tuple[int, int]], ball_class: int, class_live: bool,
                   focus: float) -> torch.Tensor:
    """Mean over the cells and anchors of the paired levels of (1 + focus · t) · KL(t ‖ p)."""
    total = student[0].new_zeros(())
    cells = 0
    for s_level, r_level in pairs:
        raw = student[s_level]
        target = reference_score(reference[r_level].to(raw), ball_class)
        log_p, log_not_p = student_log_score(raw, class_live)
        total = total + ((1 + focus * target) * bernoulli_kl_to(target, log_p, log_not_p)).sum()
        cells += target.numel()
    return total / cells


def paired_levels(student: DetectionHead, reference: DetectionHead, levels: str | Sequence[int],
                  source: str) -> list[tuple[int, int]]:
    """(student level, reference level) of every stride both have (or of the strides named), checked
    anchor for anchor: the two are compared cell by cell, so those levels must line up exactly."""
    s_strides = [int(s) for s in student.stride.tolist()]
    r_strides = [int(s) for s in reference.stride.tolist()]
    shared = [s for s in s_strides if s in r_strides]
    if isinstance(levels, str):
        if levels != "all":
            raise ConfigError(f"{WHERE}.levels: 'all' or a list of strides (e.g. [8, 16]), got {levels!r}")
        chosen = shared
    else:
        missing = [s for s in levels if s not in shared]
        if missing:
            raise ConfigError(f"{WHERE}.levels: stride(s) {missing} are not levels of both the student "
                              f"{s_strides} and the reference {source} {r_strides}")
        chosen = [s for s in shared if s in levels]
    if not chosen:
        raise ConfigError(f"{WHERE}: the student's strides {s_strides} share none with the reference "
                          f"{source} {r_strides}")
    pairs = [(s_strides.index(s), r_strides.index(s)) for s in chosen]
    for s_level, r_level in pairs:
        s_anchors, r_anchors = student.anchors_px[s_level].cpu(), reference.anchors_px[r_level].cpu()
        if s_anchors.shape != r_anchors.shape or not torch.allclose(s_anchors, r_anchors):
            raise ConfigError(f"{WHERE}: stride {s_strides[s_level]}: anchors {r_anchors.tolist()} of the reference "
                              f"{source} differ from the student's {s_anchors.tolist()}; they are compared "
                              "anchor by anchor")
    return pairs


class CocoBallTerm(LossTerm):
    columns = ("coco_ball",)

    def __init__(self, settings: CocoBallSettings, reference: Teacher, pairs: list[tuple[int, int]],
                 class_live: bool) -> None:
        super().__init__(settings.weight)
        self.reference = reference  # a plain attribute, not a submodule: nothing that trains reaches it
        self.pairs = pairs
        self.ball_class = settings.ball_class
        self.class_live = class_live
        self.focus = settings.focus

    def compute(self, step: Step) -> TermResult:
        if step.images is None:
            raise ConfigError(f"{WHERE}: the reference model needs the batch's images")
        outputs, _ = self.reference.run(step.images)
        reference = [level.to(step.images.device) for level in outputs["detection"]]
        value = coco_ball_loss(step.outputs["detection"], reference, self.pairs, self.ball_class, self.class_live,
                               self.focus)
        return TermResult(self.weight * value * step.batch, {"coco_ball": value.detach()})


def load_reference(weights: str, device: torch.device) -> Teacher:
    """The reference model, frozen (no gradient, eval mode on every call), on the student's device."""
    try:
        path = resolve_weights(weights)
        model = load_model(path, device=device)
    except WeightsError as exc:
        raise ConfigError(f"{WHERE}.weights: {exc}") from exc
    return Teacher(model, str(path))


@register_term("coco_ball")
def build_coco_ball(context: BuildContext, options: dict[str, Any]) -> CocoBallTerm:
    settings = from_dict(CocoBallSettings, options, WHERE)
    if settings.focus < 0:
        raise ConfigError(f"{WHERE}.focus must be >= 0, got {settings.focus}")
    device = next(context.model.parameters()).device
    reference = load_reference(settings.weights, device)
    nc = reference.model.detect.nc
    if not 0 <= settings.ball_class < nc:
        raise ConfigError(f"{WHERE}.ball_class: {settings.ball_class} is not a class of {reference.source} "
                          f"({nc} classes)")
    pairs = paired_levels(context.model.detect, reference.model.detect, settings.levels, reference.source)
    return CocoBallTerm(settings, reference, pairs, class_live=context.model.detect.nc > 1)
