"""Slice-aided training: native-resolution windows of large images as training samples.

Training shrinks every image to `imgsz`; a 10-pixel ball in a 1280-pixel frame is 2-3 pixels
after that, too small to learn, while sliced inference (`infer/slicing.py`) shows the model
windows at native resolution. Half of what slicing gains needs the model trained on such
windows too. With `augment.slices`, an image whose long side is at least `min_ratio` x imgsz
becomes, with probability `prob`, an imgsz x imgsz window cut from it without any resize (grey
beyond the image where its short side is smaller); with probability `ball_prob` the window is
placed so that it holds a ball of the image (one drawn at random, kept clear of the window's
inner edges; a ball too large for that gets the window centred on it), else anywhere. Boxes
crossing the window's edges follow the rule of sliced inference (`data.windows`).

A window has the shape a shrunk whole image has (long side imgsz), so it takes that image's
place everywhere: as the single image of a sample, and as any of the four tiles of a mosaic,
each tile drawn on its own. Flips, colour jitter, affine and the rest apply to it as to any
image. The draws come from a generator of the sample's own (seed, epoch, index), apart from
the other augmentations' stream, so switching windows on leaves every other draw as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mhyolo.data.windows import EDGE_MARGIN, Window, boxes_in_window
from mhyolo.errors import ConfigError

# One sample piece: an HWC image, its boxes as pixel xyxy (n, 4) and their type ids (n,).
Tile = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_probability(key: str, value: float) -> None:
    """A probability setting in [0, 1], or a ConfigError naming `key`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: a probability must be in [0, 1], got {value!r}")


@dataclass
class SliceConfig:
    """`augment.slices`: how often a large image trains as a native-resolution window (0: never)."""

    prob: float = 0.0  # share of the large images that become a window
    ball_prob: float = 0.8  # share of the windows placed to hold a ball (the rest: anywhere)
    min_ratio: float = 1.5  # an image is large when its long side is at least this x imgsz

    def __post_init__(self) -> None:
        check_probability("augment.slices.prob", self.prob)
        check_probability("augment.slices.ball_prob", self.ball_prob)
        if (not isinstance(self.min_ratio, (int, float)) or isinstance(self.min_ratio, bool)
                or self.min_ratio < 1.0):
            raise ConfigError(f"augment.slices.min_ratio: must be a number >= 1 (a window is imgsz wide, "
                              f"the image at least that), got {self.min_ratio!r}")

    @property
    def enabled(self) -> bool:
        return self.prob > 0


@dataclass(frozen=True)
class WindowChoice:
    window: Window
    ball: int | None  # the box the window was placed to hold; None: placed at random


def is_large(shape: tuple[int, ...], imgsz: int, min_ratio: float) -> bool:
    """Whether an image of `shape` (height, width, ...) is windowed at all."""
    return max(shape[0], shape[1]) >= min_ratio * imgsz


def _start_holding(low: float, high: float, extent: int, size: int, rng: np.random.Generator) -> int:
    """A window start along one axis keeping [low, high] inside [start, start + size], clear of an
    inner edge by more than `EDGE_MARGIN` (so the window rule keeps it), and the window inside
    [0, extent]; centred on the box where the box does not fit."""
    last = max(extent - size, 0)
    clear = EDGE_MARGIN + 1
    first_ok = int(np.clip(np.ceil(high + clear - size), 0, last))
    last_ok = int(np.clip(np.floor(low - clear), 0, last))
    if first_ok > last_ok:
        return int(np.clip(round((low + high) / 2 - size / 2), 0, last))
    return int(rng.integers(first_ok, last_ok, endpoint=True))


def choose_window(shape: tuple[int, ...], boxes: np.ndarray, size: int, rng: np.random.Generator,
                  ball_prob: float) -> WindowChoice:
    """Where a `size` window goes in an image of `shape`: around a random box of `boxes` (pixel
    xyxy) with probability `ball_prob` when there is one, else anywhere (uniform)."""
    height, width = shape[0], shape[1]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ball = None
    if rng.random() < ball_prob and len(boxes):
        ball = int(rng.integers(len(boxes)))
        x1, y1, x2, y2 = boxes[ball]
        x0 = _start_holding(float(x1), float(x2), width, size, rng)
        y0 = _start_holding(float(y1), float(y2), height, size, rng)
    else:
        x0 = int(rng.integers(0, max(width - size, 0), endpoint=True))
        y0 = int(rng.integers(0, max(height - size, 0), endpoint=True))
    return WindowChoice((x0, y0, min(x0 + size, width), min(y0 + size, height)), ball)


def cut_window(image: np.ndarray, boxes: np.ndarray, types: np.ndarray, window: Window, size: int,
               fill: int) -> Tile:
    """The `size` x `size` sample of `window`: its pixels as they are (grey `fill` beyond the
    image, right and below), and its boxes by the window rule (`data.windows`)."""
    x0, y0, x1, y1 = window
    crop = image[y0:y1, x0:x1]
    if crop.shape[:2] == (size, size):
        sample = crop.copy()
    else:
        sample = np.full((size, size, *image.shape[2:]), fill, dtype=image.dtype)
        sample[:y1 - y0, :x1 - x0] = crop
    kept, kept_types = boxes_in_window(boxes, types, window, image.shape[:2])
    return sample, kept, kept_types
