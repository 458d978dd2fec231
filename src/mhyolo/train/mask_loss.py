"""The mask loss of a model with a `MaskHead`, registered as the `ellipse_mask` loss term.

YOLOv5-seg's loss: for every positive of the detector (the same image, anchor and cell the box and
type losses use), the mask logits sigmoid(coefficients . prototypes) are compared with the object's
mask pixel by pixel (binary cross-entropy on the prototype grid, a quarter of the input size), only
inside the object's box and averaged over the box's area, so a small ball weighs as much as a large one.

The ball sets carry boxes only: the mask a ball gets is the ellipse inscribed in its box (a ball is
round; occlusion by a hand or a net is not modelled), computed on the prototype grid from the
(augmented) box itself, so every augmentation that moves a box moves its mask exactly.

    objective:
      terms:
        ellipse_mask: {weight: 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mhyolo.config import from_dict
from mhyolo.errors import ConfigError
from mhyolo.model.mask_head import MaskHead
from mhyolo.train.assign import LevelTargets
from mhyolo.train.terms import BuildContext, LossTerm, Step, TermResult, register_term

WHERE = "objective.terms.ellipse_mask"


def ellipse_targets(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For (n, 4) normalised [cx, cy, w, h] boxes: the inscribed ellipses and the boxes as (n, height,
    width) float masks on a grid of pixel centres."""
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5).view(1, height, 1) / height
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5).view(1, 1, width) / width
    cx, cy, w, h = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    dx, dy = (xs - cx) / (w / 2).clamp(min=1e-9), (ys - cy) / (h / 2).clamp(min=1e-9)
    ellipse = (dx.square() + dy.square() <= 1.0).to(boxes.dtype)
    box = ((dx.abs() <= 1.0) & (dy.abs() <= 1.0)).to(boxes.dtype)
    return ellipse, box


def mask_loss(prototypes: torch.Tensor, coefficients: Sequence[torch.Tensor], assigned: Sequence[LevelTargets],
              targets: torch.Tensor) -> torch.Tensor:
    """Mean over the positives of the in-box BCE between their mask logits and their ellipses.

    prototypes (B, nm, h, w); coefficients per level (B, na, H, W, nm); targets (N, 6) [image, label,
    cx, cy, w, h] normalised; `assigned` the detector's positives per level (`LevelTargets.target`
    names each positive's row of `targets`)."""
    if len(coefficients) != len(assigned):
        raise ConfigError(f"mask loss: {len(coefficients)} levels of coefficients but {len(assigned)} of targets")
    height, width = prototypes.shape[2:]
    rows = [level[p.image, p.anchor, p.gy, p.gx] for level, p in zip(coefficients, assigned)]
    images = torch.cat([p.image for p in assigned])
    if images.numel() == 0:
        return prototypes.sum() * 0.0 + sum(c.sum() for c in coefficients) * 0.0  # keeps the graph intact
    target_rows = torch.cat([p.target for p in assigned]).long()
    logits = torch.einsum("nk,nkhw->nhw", torch.cat(rows), prototypes[images])
    ellipse, box = ellipse_targets(targets[target_rows, 2:6].to(logits.dtype), height, width)
    bce = F.binary_cross_entropy_with_logits(logits, ellipse, reduction="none")
    per_positive = (bce * box).sum(dim=(1, 2)) / box.sum(dim=(1, 2)).clamp(min=1.0)
    return per_positive.mean()


@dataclass
class EllipseMaskSettings:
    weight: float = 1.0


class EllipseMaskTerm(LossTerm):
    """`mask_loss` on the model's `MaskHead` output, weighted, scaled by the batch as the box loss is."""

    columns = ("mask",)

    def compute(self, step: Step) -> TermResult:
        prototypes, coefficients = step.outputs[MaskHead.output_name]
        value = mask_loss(prototypes, coefficients, step.assigned, step.targets)
        return TermResult(self.weight * value * step.batch, {"mask": value.detach()})


@register_term("ellipse_mask")
def build_ellipse_mask(context: BuildContext, options: dict[str, Any]) -> EllipseMaskTerm:
    settings = from_dict(EllipseMaskSettings, options, WHERE)
    if MaskHead.output_name not in context.model.heads:
        raise ConfigError(f"{WHERE}: the model has no mask head (use a -seg architecture, e.g. yolov5n-seg)")
    return EllipseMaskTerm(settings.weight)
