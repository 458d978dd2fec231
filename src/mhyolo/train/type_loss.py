"""Losses of the ball-type heads (see `mhyolo.model.type_heads`).

`ObjectTypeLoss` trains the per-object head only at the detector's positive cells
(the same `assign_targets` result the detection loss uses), so a cell learns a type
exactly when it learns to find a ball. `ImageTypeLoss` trains the per-image head
against the type of each image's largest box, the ball the image is about.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mhyolo.errors import MhyoloError
from mhyolo.train.assign import LevelTargets

NO_TYPE = -1  # image type of an image without boxes: ignored by the loss


def _check_types(types: torch.Tensor, ntypes: int, what: str) -> None:
    """Out-of-range ids would otherwise fail deep inside cross-entropy with no hint of the cause."""
    if types.numel() and (int(types.min()) < 0 or int(types.max()) >= ntypes):
        raise MhyoloError(f"{what}: type ids must lie in [0, {ntypes - 1}], found "
                          f"{int(types.min())}..{int(types.max())} (is the label column the ball type?)")


class ObjectTypeLoss(nn.Module):
    """Cross-entropy of the type logits at every positive (image, anchor, row, column),
    averaged over all positives of all levels; the target is the positive's label."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, raw: Sequence[torch.Tensor], assigned: Sequence[LevelTargets]) -> torch.Tensor:
        """raw: per-level logits (B, na, H, W, ntypes); assigned: the detector's positives per level."""
        if len(raw) != len(assigned):
            raise MhyoloError(f"type loss: {len(raw)} levels of logits but {len(assigned)} levels of targets")
        logits = [r[p.image, p.anchor, p.gy, p.gx] for r, p in zip(raw, assigned)]
        labels = torch.cat([p.label for p in assigned])
        if labels.numel() == 0:
            return sum(r.sum() for r in raw) * 0.0  # keeps the graph (and DDP) intact
        ntypes = int(raw[0].shape[-1])
        _check_types(labels, ntypes, "object type loss")
        return F.cross_entropy(torch.cat(logits), labels.to(raw[0].device), label_smoothing=self.label_smoothing)


def image_types(targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Type of each image's largest box (by area); NO_TYPE for images without boxes.

    targets: (N, 6) rows [batch index, type, cx, cy, w, h]. Equal areas resolve to the
    earliest row, so the result never depends on scatter order.
    """
    device = targets.device
    result = torch.full((batch_size,), NO_TYPE, dtype=torch.long, device=device)
    if targets.shape[0] == 0:
        return result
    image = targets[:, 0].long()
    if int(image.min()) < 0 or int(image.max()) >= batch_size:
        raise MhyoloError(f"image type loss: batch indices must lie in [0, {batch_size - 1}], "
                          f"found {int(image.min())}..{int(image.max())}")
    area = targets[:, 4] * targets[:, 5]
    largest = torch.full((batch_size,), -torch.inf, dtype=area.dtype, device=device)
    largest = largest.scatter_reduce(0, image, area, reduce="amax")
    rows = torch.arange(targets.shape[0], device=device)
    candidate = torch.where(area == largest[image], rows, targets.shape[0])
    first = torch.full((batch_size,), targets.shape[0], dtype=torch.long, device=device)
    first = first.scatter_reduce(0, image, candidate, reduce="amin")
    has_box = first < targets.shape[0]
    result[has_box] = targets[first[has_box], 1].long()
    return result


class ImageTypeLoss(nn.Module):
    """Cross-entropy of per-image type logits against each image's largest-box type;
    images without boxes do not count (0 when none has a box)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits: (B, ntypes); targets: (N, 6) [batch index, type, cx, cy, w, h]."""
        types = image_types(targets.to(logits.device), logits.shape[0])
        known = types != NO_TYPE
        if not bool(known.any()):
            return logits.sum() * 0.0
        _check_types(types[known], int(logits.shape[1]), "image type loss")
        return F.cross_entropy(logits[known], types[known], label_smoothing=self.label_smoothing)
