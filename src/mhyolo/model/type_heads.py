"""Ball-type heads that read the same neck features (P3, P4, P5) as `Detect`.

Two designs, chosen per model config:

* `ImageTypeHead` gives one type per image (pooled features -> small MLP per level,
  logits averaged over levels). It assumes one ball type per image.
* `ObjectTypeHead` gives one type per detection row: a light convolutional branch
  laid out exactly like `Detect` (level, anchor, row, column), so the type of a kept
  detection is read from the very cell and anchor that produced it.

Both follow the head contract of `mhyolo.model.heads`: an `output_name`, `forward`
returning raw logits (what the losses consume) and `inference` returning
probabilities. Their builders are registered under the class names for model YAMLs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mhyolo.errors import ConfigError
from mhyolo.model.heads import per_anchor
from mhyolo.model.layers import DEFAULT_ACT, Conv
from mhyolo.model.registry import Row, anchors_per_level, input_channels, positive_int, register_layer

IMAGE_HIDDEN = 128
IMAGE_DROPOUT = 0.2
OBJECT_HIDDEN = 64


class ImageTypeHead(nn.Module):
    """Per level: global average pooling -> Linear -> ReLU -> Dropout -> Linear; the
    levels' logits are averaged so every scale votes with the same weight."""

    output_name = "image_type"

    def __init__(self, ntypes: int, ch: Sequence[int], hidden: int = IMAGE_HIDDEN,
                 dropout: float = IMAGE_DROPOUT) -> None:
        super().__init__()
        self.ntypes = ntypes
        self.nl = len(ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.m = nn.ModuleList(
            nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, ntypes))
            for c in ch)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Type logits (B, ntypes), the mean of the per-level logits."""
        logits = [mlp(self.pool(x).flatten(1)) for mlp, x in zip(self.m, features)]
        return torch.stack(logits, 0).mean(0)

    def inference(self, raw: torch.Tensor) -> torch.Tensor:
        """Type probabilities (B, ntypes)."""
        return raw.softmax(-1)


class ObjectTypeHead(nn.Module):
    """Per level: a 3x3 `Conv` block then a 1x1 convolution to `na * ntypes` logits,
    parallel to `Detect` and with its (anchor, row, column) layout.

    `hidden=0` drops the 3x3 block: one 1x1 convolution per level, exactly like Detect's
    own outputs (x1.03 of the detector's latency at 640 instead of x1.10). When the detector
    trains with it the neck learns the features it needs; the 3x3 block earns its cost on
    a frozen detector, whose features cannot adapt. The 3x3 block uses the model's activation (`act`)."""

    output_name = "type"

    def __init__(self, ntypes: int, na: int, ch: Sequence[int], hidden: int = OBJECT_HIDDEN,
                 act: str = DEFAULT_ACT) -> None:
        super().__init__()
        self.ntypes = ntypes
        self.na = na
        self.nl = len(ch)
        if hidden < 0:
            raise ConfigError(f"ObjectTypeHead: hidden width must be 0 (none) or positive, got {hidden}")
        self.m = nn.ModuleList(
            nn.Sequential(Conv(c, min(c, hidden), 3, 1, act=act), nn.Conv2d(min(c, hidden), na * ntypes, 1)) if hidden
            else nn.Sequential(nn.Conv2d(c, na * ntypes, 1)) for c in ch)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Raw type logits per level, shaped (B, na, H, W, ntypes) like `Detect.forward`."""
        return [per_anchor(branch(x), self.na) for branch, x in zip(self.m, features)]

    def probabilities(self, raw: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Softmax per level: the tensors an exported graph ends with."""
        return [r.softmax(-1) for r in raw]

    def inference(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Type probabilities (B, N, ntypes); row n belongs to detection row n of `Detect.inference`."""
        return flatten_levels(self.probabilities(raw))


def flatten_levels(per_level: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, na, H, W, k) per level -> (B, N, k), level by level then anchor, row, column:
    the same order `decode_levels` gives detection rows."""
    return torch.cat([p.reshape(p.shape[0], -1, p.shape[-1]) for p in per_level], dim=1)


def _ntypes(row: Row) -> int:
    if not row.args:
        raise ConfigError(f"row {row.index} ({row.name}): args must start with the number of types (ntypes)")
    ntypes = positive_int(row, row.args[0], "ntypes")
    if ntypes < 2:
        raise ConfigError(f"row {row.index} ({row.name}): ntypes must be at least 2, got {ntypes}")
    return ntypes


@register_layer("ImageTypeHead")
def _image_type_head(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    """args: [ntypes, hidden=128]."""
    ntypes = _ntypes(row)
    hidden = positive_int(row, row.args[1], "hidden width") if len(row.args) > 1 else IMAGE_HIDDEN
    return ImageTypeHead(ntypes, input_channels(row, channels), hidden), 0


@register_layer("ObjectTypeHead")
def _object_type_head(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    """args: [ntypes, anchors, hidden=64]; anchors is the anchor count per level or the
    detector's anchor list (pixels per level), whose length gives that count; hidden 0
    means a single 1x1 convolution per level."""
    ntypes = _ntypes(row)
    if len(row.args) < 2:
        raise ConfigError(f"row {row.index} ({row.name}): args must be [ntypes, anchors] (anchors: count or list)")
    hidden = row.args[2] if len(row.args) > 2 else OBJECT_HIDDEN
    if hidden != 0 or isinstance(hidden, bool):  # 0 (not False): no hidden block
        hidden = positive_int(row, hidden, "hidden width (0 for none)")
    ch = input_channels(row, channels)
    return ObjectTypeHead(ntypes, anchors_per_level(row, row.args[1], len(ch)), ch, hidden, act=row.act), 0
