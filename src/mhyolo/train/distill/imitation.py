"""Fine-grained feature imitation (Wang et al., CVPR 2019; seed 001 §III): the student's feature map,
through an adaptation conv, imitates the teacher's at the cells near objects.

The mask, per image and imitation level: for each ground-truth box, the IoU with every anchor at
every cell (anchor centred on the cell); the cells where some anchor's IoU exceeds ψ times that
box's largest IoU are 1, united over the boxes. With the adapted student features `a` and the
teacher's `t`, L_im = Σ mask · (a − t)² / (2 N_p), summed over images, cells and channels, N_p the
number of mask cells in the batch; total = L_gt + λ · L_im (λ = 0.01, ψ = 0.5 by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision.ops import box_convert, box_iou

from mhyolo.config import from_dict
from mhyolo.errors import ConfigError
from mhyolo.train.terms import BuildContext, LossTerm, Step, TermResult, register_term

P3_ROW = 17  # yolov5n's stride-8 neck output, Detect's first input


def imitation_mask(boxes_xyxy: torch.Tensor, anchors_px: torch.Tensor, stride: float, grid: tuple[int, int],
                   psi: float = 0.5) -> torch.Tensor:
    """(H, W) bool mask of one image: `boxes_xyxy` (n, 4) in input pixels, `anchors_px` (na, 2) the
    level's anchor sizes in pixels, cells of `stride` pixels."""
    height, width = grid
    mask = torch.zeros(height, width, dtype=torch.bool, device=boxes_xyxy.device)
    if len(boxes_xyxy) == 0:
        return mask
    ys, xs = torch.meshgrid(torch.arange(height, device=boxes_xyxy.device, dtype=torch.float32),
                            torch.arange(width, device=boxes_xyxy.device, dtype=torch.float32), indexing="ij")
    centres = torch.stack(((xs + 0.5) * stride, (ys + 0.5) * stride), -1).view(height, width, 1, 2)
    sizes = anchors_px.to(centres).view(1, 1, -1, 2).expand(height, width, -1, 2)
    anchor_boxes = box_convert(torch.cat((centres.expand_as(sizes), sizes), -1).view(-1, 4), "cxcywh", "xyxy")
    iou = box_iou(boxes_xyxy.float(), anchor_boxes).view(len(boxes_xyxy), height, width, -1)  # (n, H, W, na)
    best = iou.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    near = (iou > psi * best) & (best > 0)
    return near.any(dim=3).any(dim=0)


def batch_masks(targets: torch.Tensor, batch: int, image_size: tuple[int, int], anchors_px: torch.Tensor,
                stride: float, grid: tuple[int, int], psi: float) -> torch.Tensor:
    """(B, H, W) masks from training targets [image, type, cx, cy, w, h] (normalised)."""
    height, width = image_size
    scale = targets.new_tensor([width, height, width, height])
    masks = []
    for index in range(batch):
        rows = targets[targets[:, 0] == index]
        boxes = box_convert(rows[:, 2:6] * scale, "cxcywh", "xyxy")
        masks.append(imitation_mask(boxes, anchors_px, stride, grid, psi))
    return torch.stack(masks)


def imitation_loss(adapted: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ mask · (adapted − teacher)² / (2 N_p); zero (graph kept) when no cell is masked."""
    cells = mask.sum()
    squared = (adapted - teacher).pow(2).sum(dim=1)  # over channels: (B, H, W)
    total = (squared * mask.to(squared.dtype)).sum()
    return total / (2 * cells) if cells > 0 else total * 0.0


@dataclass
class ImitationSettings:
    weight: float = 0.01  # λ
    psi: float = 0.5  # ψ
    rows: list[int] = field(default_factory=lambda: [P3_ROW])  # Detect inputs: 17 (P3), 20 (P4), 23 (P5)


class ImitationTerm(LossTerm):
    columns = ("imitation",)
    needs_teacher = True

    def __init__(self, settings: ImitationSettings, levels: dict[int, int], channels: dict[int, tuple[int, int]],
                 anchors_px: torch.Tensor, strides: list[float]) -> None:
        super().__init__(settings.weight)
        self.psi = settings.psi
        self.rows = tuple(settings.rows)
        self.feature_rows = self.teacher_rows = self.rows
        self.levels = levels  # row -> detection level (its anchors and stride)
        self.strides = strides
        self.register_buffer("anchors_px", anchors_px.detach().clone(), persistent=False)
        # a 3x3 adaptation conv per row, to the teacher's channels (it helps even when they match)
        self.adapters = nn.ModuleList(nn.Conv2d(channels[row][0], channels[row][1], 3, padding=1) for row in self.rows)

    def compute(self, step: Step) -> TermResult:
        _, taught = step.taught
        assert step.images is not None
        image_size = (int(step.images.shape[2]), int(step.images.shape[3]))
        total = step.targets.new_zeros(())
        for row, adapter in zip(self.rows, self.adapters):
            student, teacher = step.features[row], taught[row].to(step.features[row].dtype)
            level = self.levels[row]
            mask = batch_masks(step.targets, step.batch, image_size, self.anchors_px[level], self.strides[level],
                               (int(student.shape[2]), int(student.shape[3])), self.psi)
            total = total + imitation_loss(adapter(student), teacher, mask)
        return TermResult(self.weight * total * step.batch, {"imitation": total.detach()})


@register_term("imitation")
def build_imitation(context: BuildContext, options: dict[str, Any]) -> ImitationTerm:
    settings = from_dict(ImitationSettings, options, "objective.terms.imitation")
    if not settings.rows:
        raise ConfigError("objective.terms.imitation.rows: name at least one row (17 = P3)")
    if not 0.0 < settings.psi <= 1.0:
        raise ConfigError(f"objective.terms.imitation.psi must be in (0, 1], got {settings.psi}")
    detect = context.model.detect
    inputs = list(detect.f) if isinstance(detect.f, (list, tuple)) else [detect.f]
    unknown = [row for row in settings.rows if row not in inputs]
    if unknown:
        raise ConfigError(f"objective.terms.imitation.rows: {unknown} are not detection inputs {inputs}: the mask "
                          "needs a level's anchors and stride")
    if context.teacher is None:
        raise ConfigError("objective.terms: imitation learns from a teacher: give one (--teacher WEIGHTS)")
    channels = context.teacher.check_lines_up(context.model, anchors=False, rows=settings.rows)
    return ImitationTerm(settings, {row: inputs.index(row) for row in settings.rows}, channels,
                         detect.anchors_px.detach().cpu(), [float(s) for s in detect.stride])
