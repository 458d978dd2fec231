"""YOLOv5's detection loss: CIoU box regression, objectness BCE towards the IoU, and a
class BCE only when the detector has more than one class.

With nc=1 (the generic "ball" detector) there is no class term at all: ball types
are learnt by the type head with its own loss (see `mhyolo.train.type_loss`).

Ignore regions (areas a teacher was unsure of, `mhyolo.data.dataset`) take no part in the
objectness term: the cells they cover (`assign.ignored_cells`), except the positives of real
boxes, are neither pushed towards a ball nor towards background, and the term is the mean over
the cells left. A batch without ignore regions runs exactly the plain computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import box_convert, complete_box_iou_loss

from mhyolo.defaults import DEFAULT_IMGSZ
from mhyolo.errors import ConfigError
from mhyolo.train.assign import LevelTargets, assign_targets, ignored_cells

# Objectness weight per level, finest first (a fine level has many more cells per object, so each
# cell's negatives weigh less): YOLOv5's weights for three levels, and for four or five
# (P2-P5, P3-P6, P2-P6) its longer list, cut to the number of levels.
LEVEL_BALANCE = {3: (4.0, 1.0, 0.4)}
LEVEL_BALANCE_MANY = (4.0, 1.0, 0.25, 0.06, 0.02)


def level_balance(nl: int) -> tuple[float, ...]:
    """The objectness weights of `nl` levels, finest first; more levels than YOLOv5 weighs are refused."""
    weights = LEVEL_BALANCE.get(nl, LEVEL_BALANCE_MANY[:nl])
    if len(weights) != nl:
        raise ConfigError(f"the detection loss weighs at most {len(LEVEL_BALANCE_MANY)} levels, "
                          f"this detector has {nl}")
    return weights


@dataclass
class LossConfig:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    label_smoothing: float = 0.0


def decode_positive_boxes(raw: torch.Tensor, positives: LevelTargets) -> torch.Tensor:
    """Predicted [x offset, y offset, w, h] (grid units) at the positive cells."""
    pred = raw[positives.image, positives.anchor, positives.gy, positives.gx]
    xy = pred[:, 0:2].sigmoid() * 2 - 0.5
    wh = (pred[:, 2:4].sigmoid() * 2) ** 2 * positives.anchor_wh
    return torch.cat((xy, wh), 1)


def ciou(pred_xywh: torch.Tensor, target_xywh: torch.Tensor) -> torch.Tensor:
    """Complete IoU of matching rows (torchvision computes 1 - CIoU)."""
    return 1.0 - complete_box_iou_loss(box_convert(pred_xywh, "cxcywh", "xyxy"),
                                       box_convert(target_xywh, "cxcywh", "xyxy"), reduction="none", eps=1e-7)


class DetectionLoss(nn.Module):
    """Loss for `Detect` raw outputs. `forward` returns (total scaled by batch size, parts)."""

    def __init__(self, anchors: torch.Tensor, nc: int, config: LossConfig | None = None,
                 imgsz: int = DEFAULT_IMGSZ) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.nc = nc
        nl = anchors.shape[0]
        # YOLOv5 scales the gains by the number of levels, classes and image size.
        self.box_gain = self.config.box * 3 / nl
        self.cls_gain = self.config.cls * nc / 80 * 3 / nl
        self.obj_gain = self.config.obj * (imgsz / 640) ** 2 * 3 / nl
        self.balance = level_balance(nl)
        self.register_buffer("anchors", anchors.detach().clone())
        self.bce = nn.BCEWithLogitsLoss()

    def assign(self, raw: Sequence[torch.Tensor], targets: torch.Tensor) -> list[LevelTargets]:
        shapes = [(int(r.shape[2]), int(r.shape[3])) for r in raw]
        return assign_targets(targets, self.anchors, shapes, self.config.anchor_t)

    def forward(self, raw: Sequence[torch.Tensor], targets: torch.Tensor,
                assigned: list[LevelTargets] | None = None,
                ignore: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`ignore`: (M, 5) [image index, cx, cy, w, h] ignore regions (normalised), or None."""
        assigned = assigned if assigned is not None else self.assign(raw, targets)
        device = raw[0].device
        skipped = (ignored_cells(ignore, int(raw[0].shape[0]), [(int(r.shape[2]), int(r.shape[3])) for r in raw])
                   if ignore is not None and len(ignore) else None)
        box_loss = torch.zeros((), device=device)
        obj_loss = torch.zeros((), device=device)
        cls_loss = torch.zeros((), device=device)
        positive_value = 1.0 - 0.5 * self.config.label_smoothing
        negative_value = 0.5 * self.config.label_smoothing
        for level, (pred, positives) in enumerate(zip(raw, assigned)):
            obj_target = torch.zeros(pred.shape[:4], device=device, dtype=pred.dtype)
            if len(positives):
                iou = ciou(decode_positive_boxes(pred, positives), positives.box)
                box_loss = box_loss + (1.0 - iou).mean()
                obj_target[positives.image, positives.anchor, positives.gy, positives.gx] = \
                    iou.detach().clamp(0).to(obj_target.dtype)
                if self.nc > 1:
                    logits = pred[positives.image, positives.anchor, positives.gy, positives.gx, 5:]
                    cls_target = torch.full_like(logits, negative_value)
                    cls_target[torch.arange(len(positives), device=device), positives.label] = positive_value
                    cls_loss = cls_loss + self.bce(logits, cls_target)
            if skipped is None:
                level_obj = self.bce(pred[..., 4], obj_target)
            else:
                level_obj = _masked_bce(pred[..., 4], obj_target, skipped[level], positives)
            obj_loss = obj_loss + level_obj * self.balance[level]
        box_loss, obj_loss, cls_loss = box_loss * self.box_gain, obj_loss * self.obj_gain, cls_loss * self.cls_gain
        batch = raw[0].shape[0]
        total = (box_loss + obj_loss + cls_loss) * batch
        return total, {"box": box_loss.detach(), "obj": obj_loss.detach(), "cls": cls_loss.detach()}


def _masked_bce(logits: torch.Tensor, target: torch.Tensor, skipped_cells: torch.Tensor,
                positives: LevelTargets) -> torch.Tensor:
    """Objectness BCE averaged over the (image, anchor, cell) entries outside the ignore regions;
    a real box's positive counts even inside one. skipped_cells: (B, H, W) bool."""
    counted = ~skipped_cells[:, None].expand_as(target)
    if len(positives):
        counted = counted.clone()
        counted[positives.image, positives.anchor, positives.gy, positives.gx] = True
    losses = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (losses * counted).sum() / counted.sum().clamp(min=1)
