"""YOLOX-style decoupled detection head with YOLOv5's anchors and output layout.

Per level a 1x1 stem, then a classification branch (two 3x3 convs -> class logits) and a
regression branch (two 3x3 convs -> box offsets and objectness). The outputs are put back
into `Detect`'s raw layout, (B, na, H, W, 5 + nc) of [x, y, w, h, obj, cls...] with the
same anchors and strides, so the loss, NMS, validation and export read it unchanged, and a
coupled YOLOv5 trained beside it (a distillation student) lines up with it cell by cell
and anchor by anchor. The separate branches cost parameters and latency; that is what a
student is meant to save.

The builder is registered as `DecoupledDetect` for model YAMLs: args [nc, anchors, hidden=64].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mhyolo.errors import ConfigError
from mhyolo.model.heads import DetectionHead, per_anchor
from mhyolo.model.layers import DEFAULT_ACT, Conv
from mhyolo.model.registry import Row, input_channels, register_layer

DECOUPLED_HIDDEN = 64  # YOLOX's 256 x yolov5n's width multiple 0.25


class DecoupledLevel(nn.Module):
    """One level's branches; `cls_pred` gives na*nc, `reg_pred` na*4 and `obj_pred` na channels,
    channel a*k + j being value j of anchor a (the `per_anchor` layout). Its `Conv`s use the
    model's activation (`act`)."""

    def __init__(self, c1: int, hidden: int, na: int, nc: int, act: str = DEFAULT_ACT) -> None:
        super().__init__()
        self.stem = Conv(c1, hidden, 1, 1, act=act)
        self.cls_convs = nn.Sequential(Conv(hidden, hidden, 3, 1, act=act), Conv(hidden, hidden, 3, 1, act=act))
        self.reg_convs = nn.Sequential(Conv(hidden, hidden, 3, 1, act=act), Conv(hidden, hidden, 3, 1, act=act))
        self.cls_pred = nn.Conv2d(hidden, na * nc, 1)
        self.reg_pred = nn.Conv2d(hidden, na * 4, 1)
        self.obj_pred = nn.Conv2d(hidden, na, 1)

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Box, objectness and class logits as 4-D conv outputs (what an export graph keeps)."""
        x = self.stem(x)
        reg = self.reg_convs(x)
        return self.reg_pred(reg), self.obj_pred(reg), self.cls_pred(self.cls_convs(x))


class DecoupledDetect(DetectionHead):
    """The decoupled head: `forward` returns exactly `Detect.forward`'s layout."""

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int],
                 hidden: int = DECOUPLED_HIDDEN, act: str = DEFAULT_ACT) -> None:
        super().__init__(nc, anchors)
        if hidden < 1:
            raise ConfigError(f"DecoupledDetect: hidden width must be positive, got {hidden}")
        self.hidden = hidden
        self.m = nn.ModuleList(DecoupledLevel(c, hidden, self.na, nc, act) for c in ch)

    @torch.no_grad()
    def initialize_biases(self, image_size: int = 640) -> None:
        """The priors of `Detect.initialize_biases`: objectness for about 8 objects per 640
        image, class scores near 0.6/nc."""
        for level, stride in zip(self.m, self.stride):
            level.obj_pred.bias += self.objectness_prior(float(stride), image_size)
            level.cls_pred.bias += self.class_prior()

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Raw logits per level, shaped (B, na, H, W, 5 + nc) as [x, y, w, h, obj, cls...]."""
        outputs = []
        for level, x in zip(self.m, features):
            box, obj, cls = level.branches(x)
            outputs.append(torch.cat([per_anchor(box, self.na), per_anchor(obj, self.na),
                                      per_anchor(cls, self.na)], dim=-1))
        return outputs


@register_layer("DecoupledDetect")
def _decoupled_detect(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    """args: [nc, anchors, hidden=64]; anchors in pixels per level like Detect's; hidden is the
    width of every level's stem and branches (not scaled by width_multiple)."""
    if len(row.args) < 2:
        raise ConfigError(f"row {row.index} ({row.name}): args must be [nc, anchors, hidden=64]")
    nc, anchors = row.args[0], row.args[1]
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"row {row.index} ({row.name}): nc must be a positive integer, got {nc!r}")
    if not isinstance(anchors, list) or not anchors or not all(isinstance(a, list) and a and len(a) % 2 == 0
                                                                  for a in anchors):
        raise ConfigError(f"row {row.index} ({row.name}): needs explicit anchors (pixels), "
                          f"a list of [w, h, w, h, ...] per level, got {anchors!r}")
    hidden = row.args[2] if len(row.args) > 2 else DECOUPLED_HIDDEN
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ConfigError(f"row {row.index} ({row.name}): hidden width must be a positive integer, got {hidden!r}")
    ch = input_channels(row, channels)
    if len(anchors) != len(ch):
        raise ConfigError(f"row {row.index} ({row.name}): {len(anchors)} anchor levels for {len(ch)} inputs")
    return DecoupledDetect(nc, anchors, ch, hidden, act=row.act), 0
