"""YOLOv5 target assignment: which (level, anchor, cell) predicts which ground-truth box.

A box is matched to every anchor whose width and height ratios to the box are
within `anchor_t`, at its own grid cell and the two neighbouring cells closest to
its centre. The detection loss trains those positives; the per-object type head
reuses exactly the same positives so that each kept detection's type comes from
the cell and anchor that found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

NEIGHBOUR_OFFSET = 0.5  # a centre within half a cell of a cell border also uses the neighbour


@dataclass
class LevelTargets:
    """Positives of one feature level; every tensor has one row per positive."""

    image: torch.Tensor  # (n,) index in the batch
    anchor: torch.Tensor  # (n,) anchor index within the level
    gy: torch.Tensor  # (n,) grid row
    gx: torch.Tensor  # (n,) grid column
    box: torch.Tensor  # (n, 4) target [x offset in cell, y offset in cell, w, h], grid units
    anchor_wh: torch.Tensor  # (n, 2) the matched anchor, grid units
    label: torch.Tensor  # (n,) the target's class/type id
    target: torch.Tensor  # (n,) index of the ground-truth row in `targets`

    def __len__(self) -> int:
        return int(self.image.shape[0])


def assign_targets(targets: torch.Tensor, anchors: torch.Tensor, grid_shapes: Sequence[tuple[int, int]],
                   anchor_t: float = 4.0) -> list[LevelTargets]:
    """Match ground truth to anchors on every level.

    targets: (N, 6) [image index, label, cx, cy, w, h], coordinates normalised to [0, 1].
    anchors: (nl, na, 2) in grid units of each level. grid_shapes: (H, W) per level.
    """
    device = targets.device
    na, nt = anchors.shape[1], targets.shape[0]
    target_ids = torch.arange(nt, device=device, dtype=torch.float32)
    anchor_ids = torch.arange(na, device=device, dtype=torch.float32).view(na, 1).repeat(1, nt)
    # (na, nt, 8): image, label, cx, cy, w, h, anchor id, target id
    expanded = torch.cat((targets.repeat(na, 1, 1), anchor_ids[..., None], target_ids.repeat(na, 1)[..., None]), 2)
    g = NEIGHBOUR_OFFSET
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * g
    levels: list[LevelTargets] = []
    for level, (height, width) in enumerate(grid_shapes):
        gain = torch.tensor([1, 1, width, height, width, height, 1, 1], device=device, dtype=torch.float32)
        t = expanded * gain
        level_anchors = anchors[level]
        if nt:
            ratio = t[..., 4:6] / level_anchors[:, None]
            keep = torch.max(ratio, 1 / ratio).max(2)[0] < anchor_t
            t = t[keep]
            gxy = t[:, 2:4]
            gxy_inv = torch.tensor([width, height], device=device, dtype=torch.float32) - gxy
            left, top = ((gxy % 1 < g) & (gxy > 1)).T
            right, bottom = ((gxy_inv % 1 < g) & (gxy_inv > 1)).T
            use = torch.stack((torch.ones_like(left), left, top, right, bottom))
            t = t.repeat((5, 1, 1))[use]
            shift = (torch.zeros_like(gxy)[None] + offsets[:, None])[use]
        else:
            t = expanded[0]
            shift = torch.zeros((0, 2), device=device)
        image, label = t[:, 0].long(), t[:, 1].long()
        gxy, gwh = t[:, 2:4], t[:, 4:6]
        anchor, target = t[:, 6].long(), t[:, 7].long()
        cell = (gxy - shift).long()
        gx = cell[:, 0].clamp_(0, width - 1)
        gy = cell[:, 1].clamp_(0, height - 1)
        levels.append(LevelTargets(image=image, anchor=anchor, gy=gy, gx=gx,
                                   box=torch.cat((gxy - cell, gwh), 1), anchor_wh=level_anchors[anchor],
                                   label=label, target=target))
    return levels


IGNORE_REACH = 1.0  # cells: how far around an ignore box its cells reach (the assigner's neighbours lie within)


def ignored_cells(ignore: torch.Tensor, batch: int, grid_shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Per level, a (batch, H, W) mask of the cells an ignore region covers.

    ignore: (M, 5) [image index, cx, cy, w, h], normalised. A cell is covered when its centre lies
    within the box grown by `IGNORE_REACH` cells on every side: its own cell and every neighbour the
    assigner could have made a positive for a ball there, so the region's objectness is left out
    wherever the model might predict it.
    """
    device = ignore.device
    masks: list[torch.Tensor] = []
    for height, width in grid_shapes:
        counts = torch.zeros((batch, height, width), dtype=torch.int32, device=device)
        if len(ignore):
            image = ignore[:, 0].long()
            cx, cy = ignore[:, 1] * width, ignore[:, 2] * height
            half_w, half_h = ignore[:, 3] * width / 2 + IGNORE_REACH, ignore[:, 4] * height / 2 + IGNORE_REACH
            centres_x = torch.arange(width, device=device, dtype=ignore.dtype) + 0.5
            centres_y = torch.arange(height, device=device, dtype=ignore.dtype) + 0.5
            inside_x = (centres_x[None] - cx[:, None]).abs() <= half_w[:, None]  # (M, W)
            inside_y = (centres_y[None] - cy[:, None]).abs() <= half_h[:, None]  # (M, H)
            covered = inside_y[:, :, None] & inside_x[:, None, :]  # (M, H, W)
            counts.index_add_(0, image, covered.to(torch.int32))
        masks.append(counts > 0)
    return masks
