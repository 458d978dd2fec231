"""Name -> builder table for the rows of a model YAML (`[from, repeats, module, args]`).

A builder gets the resolved row and the channels of the layers built so far and
returns the module and its output channels. Looking names up here instead of
evaluating them keeps a model file from running code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from mhyolo.errors import ConfigError
from mhyolo.model.heads import Detect
from mhyolo.model.layers import C3, DEFAULT_ACT, SPPF, Bottleneck, Concat, Conv


@dataclass(frozen=True)
class Row:
    """One YAML row after symbol substitution, with the scaling factors it needs and the
    model's activation (`act:` of the file), which every builder passes to its `Conv`s."""

    index: int
    source: int | list[int]
    repeats: int
    name: str
    args: list[Any]
    depth_multiple: float
    width_multiple: float
    act: str = DEFAULT_ACT


Builder = Callable[[Row, Sequence[int]], tuple[nn.Module, int]]
LAYER_BUILDERS: dict[str, Builder] = {}


def register_layer(*names: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        for name in names:
            LAYER_BUILDERS[name] = builder
        return builder

    return wrap


def make_divisible(value: float, divisor: int = 8) -> int:
    return int(math.ceil(value / divisor) * divisor)


def scaled_repeats(row: Row) -> int:
    return max(round(row.repeats * row.depth_multiple), 1) if row.repeats > 1 else row.repeats


def positive_int(row: Row, value: object, what: str) -> int:
    """`value` when it is a positive integer (not a bool), else a ConfigError naming the row."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"row {row.index} ({row.name}): {what} must be a positive integer, got {value!r}")
    return value


def anchors_per_level(row: Row, value: object, inputs: int) -> int:
    """A per-row head's `anchors` argument: the anchor count per level, or the detector's anchor list
    (pixels per level, one list per input), whose length gives that count."""
    if not isinstance(value, list):
        return positive_int(row, value, "anchor count")
    if not value or not isinstance(value[0], list) or len(value[0]) % 2:
        raise ConfigError(f"row {row.index} ({row.name}): anchors must be a list of [w, h, w, h, ...] per level")
    if len(value) != inputs:
        raise ConfigError(f"row {row.index} ({row.name}): {len(value)} anchor levels for {inputs} inputs")
    return len(value[0]) // 2


def input_channels(row: Row, channels: Sequence[int]) -> list[int]:
    sources = row.source if isinstance(row.source, list) else [row.source]
    return [channels[s] if s < 0 else channels[s + 1] for s in sources]  # channels[0] is the image


def _conv_like(cls: type[nn.Module]) -> Builder:
    def build(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
        c1 = input_channels(row, channels)[0]
        c2 = make_divisible(row.args[0] * row.width_multiple)
        args = [c1, c2, *row.args[1:]]
        n = scaled_repeats(row)
        if cls is C3:
            return C3(c1, c2, n, *row.args[1:], act=row.act), c2
        if n > 1:
            return nn.Sequential(*(cls(*([c2, c2] if i else [c1, c2]), *row.args[1:], act=row.act)
                                   for i in range(n))), c2
        return cls(*args, act=row.act), c2

    return build


for _cls in (Conv, Bottleneck, C3, SPPF):
    register_layer(_cls.__name__)(_conv_like(_cls))


@register_layer("Concat")
def _concat(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    return Concat(*row.args), sum(input_channels(row, channels))


@register_layer("Upsample", "nn.Upsample")
def _upsample(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    size, scale, mode = (list(row.args) + [None, 2, "nearest"][len(row.args):])[:3]
    return nn.Upsample(size=size, scale_factor=scale, mode=mode), input_channels(row, channels)[0]


@register_layer("Detect")
def _detect(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    nc, anchors = row.args[0], row.args[1]
    if isinstance(anchors, int):
        raise ConfigError(f"row {row.index}: Detect needs explicit anchors (pixels), not a count")
    return Detect(int(nc), anchors, input_channels(row, channels)), 0


def build_layer(row: Row, channels: Sequence[int]) -> tuple[nn.Module, int]:
    builder = LAYER_BUILDERS.get(row.name)
    if builder is None:
        raise ConfigError(f"row {row.index}: unknown module '{row.name}' (known: {', '.join(sorted(LAYER_BUILDERS))})")
    return builder(row, channels)

