"""Multi-scale training: each batch at a random size around the nominal one.

A model fine-tuned on ~600 photos at one input size learns the ball sizes of that size
only; at another size (or on another source, whose balls are smaller) it misses them.
Resizing every batch to a random multiple of the stride in [low, high] x imgsz (as
YOLOv5's `--multi-scale`) shows it each object at many scales. Labels are normalised,
so only the pixels change. The size is a pure function of (seed, epoch, batch), so a
resumed run and every DDP rank draw the same sizes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mhyolo.errors import ConfigError


@dataclass(frozen=True)
class MultiScale:
    imgsz: int
    stride: int
    low: float = 0.5
    high: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.low <= 1.0 <= self.high:
            raise ConfigError(f"multi_scale: need 0 < low <= 1 <= high, got [{self.low}, {self.high}]")
        if self.smallest > self.largest:
            raise ConfigError(f"multi_scale [{self.low}, {self.high}] x {self.imgsz} holds no multiple of "
                              f"the stride {self.stride}")

    @property
    def smallest(self) -> int:
        return max(self.stride, math.ceil(self.low * self.imgsz / self.stride) * self.stride)

    @property
    def largest(self) -> int:
        return math.floor(self.high * self.imgsz / self.stride) * self.stride

    def size(self, epoch: int, batch: int) -> int:
        """The input side for this batch: a multiple of the stride in [smallest, largest]."""
        steps = (self.largest - self.smallest) // self.stride
        rng = random.Random(f"{self.seed}/{epoch}/{batch}")
        return self.smallest + rng.randint(0, steps) * self.stride

    def __call__(self, images: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """Resize a float (B, 3, H, W) batch to this batch's size (square inputs stay square)."""
        side = self.size(epoch, batch)
        scale = side / max(images.shape[-2:])
        if scale == 1.0:
            return images
        shape = [math.ceil(d * scale / self.stride) * self.stride for d in images.shape[-2:]]
        return F.interpolate(images, size=shape, mode="bilinear", align_corners=False)
