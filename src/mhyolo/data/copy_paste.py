"""Copy-paste of balls: crops of the split's own labelled balls pasted onto training samples.

A source with tiny balls (broadcast football: 7 x 14 px in a 1280 frame) teaches small balls
only on its own pitches, and the other sources never show a small ball at all. Pasting crops
of every source's balls at random sizes onto other images gives each camera and background
balls of each size and type. A ball is round, so a crop is pasted through the ellipse
inscribed in its box (with a soft rim of `edge_px`, or a hard edge at 0): the background
around the ball in the crop does not come along.

The bank of crops is read once per dataset (`CropBank.from_split`: at most `bank` balls drawn
by the dataset's seed, each image decoded once, each crop kept at most `max_px` on its long
side, so a bank of 1000 stays under 12 MB). Pasting happens on the sample at the training size,
after mosaic and affine and before colour jitter and flips (which then treat pasted balls like
any other): each pasted ball gets its long side drawn in [min_px, max_px] pixels, the aspect of
its box, a place fully inside the sample that overlaps no ball already there (tried a few
times, else that ball is skipped), and exactly one label, of its type, at the pasted box. Balls
are drawn from another source than the sample's with probability `other_source`, and ball-free
samples are pasted on `empty_boost` times as often as the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mhyolo.data.slices import Tile, check_probability
from mhyolo.errors import ConfigError

# Places tried for one ball before it is skipped (every try overlapped a ball).
PLACEMENT_TRIES = 10
# A labelled box narrower or shorter than this (in its image's pixels) gives no crop.
MIN_CROP_SIDE = 2
# Pixels a box edge may miss a whole pixel by and still end there (float error of normalised labels).
_ROUNDING = 1e-3
# Show a progress bar when cutting at least this many crops.
_PROGRESS_MIN_CROPS = 500
# The bank's draw: a child stream of the dataset's seed, apart from every (seed, epoch, index) sample stream.
_BANK_STREAM = 3


@dataclass
class CopyPasteConfig:
    """`augment.copy_paste`: how often and how many balls are pasted, and at which sizes (prob 0: off)."""

    prob: float = 0.0  # chance that a sample with balls gets pasted balls
    max_per_image: int = 3  # a pasted sample gets 1..max_per_image balls
    min_px: int = 6  # pasted long side, in pixels of the training sample
    max_px: int = 64
    edge_px: float = 1.0  # width of the soft rim inside the ellipse; 0: a hard edge
    other_source: float = 0.75  # chance that a ball comes from another source than the sample's
    empty_boost: float = 2.0  # ball-free samples are pasted on min(1, prob x this) of the time
    bank: int = 1000  # at most this many ball crops are kept

    def __post_init__(self) -> None:
        check_probability("augment.copy_paste.prob", self.prob)
        check_probability("augment.copy_paste.other_source", self.other_source)
        for key in ("max_per_image", "min_px", "max_px", "bank"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"augment.copy_paste.{key}: expected a whole number >= 1, got {value!r}")
        if self.min_px > self.max_px:
            raise ConfigError(f"augment.copy_paste.min_px: {self.min_px} is above max_px ({self.max_px})")
        for key, low in (("edge_px", 0.0), ("empty_boost", 1.0)):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
                raise ConfigError(f"augment.copy_paste.{key}: expected a number >= {low:g}, got {value!r}")

    @property
    def enabled(self) -> bool:
        return self.prob > 0

    def chance(self, has_balls: bool) -> float:
        """The chance that a sample gets pasted balls."""
        return self.prob if has_balls else min(1.0, self.prob * self.empty_boost)


@dataclass(frozen=True)
class BallCrop:
    pixels: np.ndarray  # RGB uint8: the labelled box's pixels, long side at most the bank's max_px
    aspect: float  # width / height of the labelled box
    type: int  # the label's class id
    source: str  # where the image came from (`data.naming.source_of`)


def crop_ball(image: np.ndarray, box: np.ndarray, max_px: int) -> np.ndarray | None:
    """The pixels of a pixel-xyxy box (whole pixels around it), shrunk to at most `max_px` on the
    long side; None for a box too thin to crop."""
    height, width = image.shape[:2]
    x1, y1 = (max(int(np.floor(v + _ROUNDING)), 0) for v in box[:2])  # normalised labels come back a hair off
    x2, y2 = min(int(np.ceil(box[2] - _ROUNDING)), width), min(int(np.ceil(box[3] - _ROUNDING)), height)
    if x2 - x1 < MIN_CROP_SIDE or y2 - y1 < MIN_CROP_SIDE:
        return None
    crop = image[y1:y2, x1:x2]
    scale = max_px / max(crop.shape[:2])
    if scale < 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return crop.copy()  # a copy: the bank must not hold on to the whole image


class CropBank:
    """The ball crops copy-paste draws from."""

    def __init__(self, crops: Sequence[BallCrop]):
        self.crops = list(crops)
        self._sources = np.array([c.source for c in self.crops], dtype=object)

    def __len__(self) -> int:
        return len(self.crops)

    @classmethod
    def from_split(cls, files: Sequence[Path], labels: Sequence[np.ndarray], sources: Sequence[str],
                   config: CopyPasteConfig, seed: int, read: Callable[[Path], np.ndarray],
                   progress: bool = True) -> CropBank:
        """Crops of up to `config.bank` labelled balls of a split (`labels`: normalised YOLO rows
        per image), drawn by `seed`; `read` decodes an image as RGB."""
        where = [(i, j) for i, rows in enumerate(labels) for j in range(len(rows))]
        if len(where) > config.bank:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_BANK_STREAM,)))
            chosen = rng.choice(len(where), config.bank, replace=False)
            where = [where[k] for k in sorted(chosen.tolist())]
        crops: list[BallCrop] = []
        quiet = not progress or len(where) < _PROGRESS_MIN_CROPS
        with tqdm(total=len(where), desc="ball crops", unit="crop", disable=quiet) as bar:
            for i, group in groupby(where, key=itemgetter(0)):  # each image decoded once
                image = read(files[i])
                height, width = image.shape[:2]
                for _, j in group:
                    kind, cx, cy, w, h = labels[i][j]
                    box = np.array([(cx - w / 2) * width, (cy - h / 2) * height,
                                    (cx + w / 2) * width, (cy + h / 2) * height])
                    pixels = crop_ball(image, box, config.max_px)
                    if pixels is not None:
                        aspect = float((box[2] - box[0]) / (box[3] - box[1]))
                        crops.append(BallCrop(pixels, aspect, int(kind), sources[i]))
                    bar.update()
        return cls(crops)

    def pick(self, rng: np.random.Generator, source: str, other_source: float) -> BallCrop:
        """A crop from another source than `source` with probability `other_source` (where the bank
        has one), else any crop."""
        others = np.flatnonzero(self._sources != source)
        if len(others) and rng.random() < other_source:
            return self.crops[int(others[rng.integers(len(others))])]
        return self.crops[int(rng.integers(len(self.crops)))]


def ellipse_alpha(height: int, width: int, edge_px: float) -> np.ndarray:
    """Opacity (float32, 0..1) of the ellipse inscribed in a height x width box: 1 inside,
    0 outside, rising over the `edge_px` pixels inside the rim (a hard edge at 0)."""
    v = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    u = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    radius = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)
    if edge_px <= 0:
        return (radius <= 1).astype(np.float32)
    depth = (1 - radius) * min(height, width) / 2  # about the distance to the rim, in pixels
    return np.clip(depth / edge_px, 0, 1).astype(np.float32)


def paste_ball(image: np.ndarray, pixels: np.ndarray, box: tuple[int, int, int, int], edge_px: float) -> None:
    """Blend `pixels`, resized to the integer xyxy `box`, into `image` (in place) through the
    inscribed ellipse; pixels outside the ellipse stay as they were."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    if pixels.shape[:2] != (height, width):
        shrink = width * height < pixels.shape[0] * pixels.shape[1]
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    alpha = ellipse_alpha(height, width, edge_px)[..., None]
    region = image[y1:y2, x1:x2]
    blended = alpha * pixels.astype(np.float32) + (1 - alpha) * region.astype(np.float32)
    image[y1:y2, x1:x2] = np.clip(np.round(blended), 0, 255).astype(image.dtype)


def pasted_size(long_side: int, aspect: float, limit: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a pasted ball: `long_side` on its long side, the box's aspect on the
    other, each at least 1 px and at most the sample's (width, height)."""
    if aspect >= 1:
        width, height = long_side, max(1, round(long_side / aspect))
    else:
        width, height = max(1, round(long_side * aspect)), long_side
    return min(width, limit[0]), min(height, limit[1])


def _overlaps(box: np.ndarray, boxes: np.ndarray) -> bool:
    if not len(boxes):
        return False
    dx = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    dy = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    return bool(np.any((dx > 0) & (dy > 0)))


class CopyPaste:
    """Pastes balls of a `CropBank` onto training samples (see the module's docstring)."""

    def __init__(self, config: CopyPasteConfig, bank: CropBank):
        self.config = config
        self.bank = bank

    def __call__(self, image: np.ndarray, boxes: np.ndarray, types: np.ndarray, rng: np.random.Generator,
                 source: str) -> Tile:
        """The sample with pasted balls appended to its boxes and types (a new image; the input is
        left as it was), or the sample itself when this draw pastes nothing."""
        cfg = self.config
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        types = np.asarray(types, np.int64).reshape(-1)
        if not len(self.bank) or rng.random() >= cfg.chance(len(boxes) > 0):
            return image, boxes, types
        height, width = image.shape[:2]
        out = image.copy()
        taken, new_types = [boxes], [types]
        for _ in range(int(rng.integers(1, cfg.max_per_image, endpoint=True))):
            crop = self.bank.pick(rng, source, cfg.other_source)
            w, h = pasted_size(int(rng.integers(cfg.min_px, cfg.max_px, endpoint=True)), crop.aspect, (width, height))
            for _ in range(PLACEMENT_TRIES):
                x1 = int(rng.integers(0, width - w, endpoint=True))
                y1 = int(rng.integers(0, height - h, endpoint=True))
                box = np.array([x1, y1, x1 + w, y1 + h], np.float32)
                if not _overlaps(box, np.concatenate(taken)):
                    paste_ball(out, crop.pixels, (x1, y1, x1 + w, y1 + h), cfg.edge_px)
                    taken.append(box[None])
                    new_types.append(np.array([crop.type], np.int64))
                    break
        return out, np.concatenate(taken), np.concatenate(new_types)
