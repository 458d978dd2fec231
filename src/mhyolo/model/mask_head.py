"""Instance masks as YOLOv5-seg makes them, as one more head on the shared neck.

`MaskHead` reads the same P3, P4, P5 features as `Detect`: from P3 a small prototype branch (3x3 conv,
x2 upsampling, 3x3 conv, 1x1 conv to `nm` channels: `nm` prototype masks at a quarter of the input size),
and per level a 1x1 convolution giving `nm` mask coefficients per (anchor, row, column), laid out like
`Detect`'s rows, so a kept detection reads its coefficients from the very cell and anchor that found
it. A box's mask is sigmoid(coefficients . prototypes) kept inside the box (assembled after NMS, in
NumPy, by `infer.masks`).

Unlike YOLOv5-seg, the coefficients are not extra channels of `Detect`: the detector's rows keep
COCO's shapes (its weights load unchanged), and a model without masks is the same model minus this head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mhyolo.errors import ConfigError
from mhyolo.model.heads import per_anchor
from mhyolo.model.layers import DEFAULT_ACT, Conv
from mhyolo.model.registry import Row, anchors_per_level, input_channels, positive_int, register_layer

PROTO_CHANNELS = 64  # the prototype branch's width for a nano model (YOLOv5-seg: 256 x width_multiple)
PROTO_STRIDE = 4  # prototypes are P3 (stride 8) upsampled x2


class MaskHead(nn.Module):
    """Prototype masks from the first feature level and per-row mask coefficients on every level."""

    output_name = "masks"
    proto_stride = PROTO_STRIDE

    def __init__(self, nm: int, na: int, ch: Sequence[int], proto_channels: int = PROTO_CHANNELS,
                 act: str = DEFAULT_ACT) -> None:
        super().__init__()
        self.nm, self.na, self.nl = nm, na, len(ch)
        self.proto = nn.Sequential(Conv(ch[0], proto_channels, 3, act=act), nn.Upsample(scale_factor=2, mode="nearest"),
                                   Conv(proto_channels, proto_channels, 3, act=act), Conv(proto_channels, nm, 1, act=act))
        self.m = nn.ModuleList(nn.Conv2d(c, na * nm, 1) for c in ch)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(prototypes (B, nm, H/4, W/4), per-level coefficients (B, na, h, w, nm)): what the mask loss reads."""
        return self.proto(features[0]), [per_anchor(conv(x), self.na) for conv, x in zip(self.m, features)]

    def inference(self, raw: tuple[torch.Tensor, list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prototypes, coefficients (B, N, nm)) with row n belonging to detection row n of `Detect.inference`."""
        prototypes, levels = raw
        return prototypes, torch.cat([c.reshape(c.shape[0], -1, c.shape[-1]) for c in levels], dim=1)


@register_layer("MaskHead")
def _mask_head(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    """args: [nm, anchors, proto_channels=64]; anchors is the anchor count per level or the detector's
    anchor list (its length gives the count)."""
    if len(row.args) < 2:
        raise ConfigError(f"row {row.index} ({row.name}): args must be [nm, anchors] (anchors: count or list)")
    nm = positive_int(row, row.args[0], "nm (mask coefficients)")
    proto = positive_int(row, row.args[2], "proto_channels") if len(row.args) > 2 else PROTO_CHANNELS
    ch = input_channels(row, channels)
    return MaskHead(nm, anchors_per_level(row, row.args[1], len(ch)), ch, proto, act=row.act), 0
