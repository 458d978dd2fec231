"""Images with a known number of balls, made by pasting real ball crops on a plain background.

A two-stage model pays for its classifier once per kept box, a multi-head model not at all, so
latency per image only compares them at a stated number of balls. These images hold 1, 4, 16 ...
balls: tight crops of ground-truth boxes of a dataset (taken in turn from every type, seeded),
each scaled to an eighth of the image side and centred in its own cell of a 4 x 4 grid on grey,
so none overlaps another and a detector sees each one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from mhyolo.infer.crops import crop_boxes
from mhyolo.data.dataset import YoloDataset
from mhyolo.data.image_file import read_image
from mhyolo.data.spec import DataSpec
from mhyolo.errors import DataError
from mhyolo.infer.preprocess import PAD_VALUE

BALL_COUNTS = (1, 4, 16)
IMAGE_SIDE = 640
BALL_SHARE = 1 / 8  # ball side over image side


def ball_crops(spec: DataSpec, count: int, split: str = "train", seed: int = 0) -> list[np.ndarray]:
    """`count` tight RGB crops of labelled balls of `split`, cycling through the types (seeded)."""
    dataset = YoloDataset(spec, split, imgsz=32, augment=None, progress=False)
    by_type: dict[int, list[tuple[int, int]]] = {}
    for i, rows in enumerate(dataset.labels):
        for j, row in enumerate(rows):
            by_type.setdefault(int(row[0]), []).append((i, j))
    if not by_type:
        raise DataError(f"{spec.yaml_path}: split '{split}' has no labelled balls to paste")
    rng = np.random.default_rng(seed)
    queues = {t: [items[k] for k in rng.permutation(len(items))] for t, items in sorted(by_type.items())}
    types = sorted(queues)
    chosen = []
    for n in range(count):
        queue = queues[types[n % len(types)]]
        chosen.append(queue[(n // len(types)) % len(queue)])
    crops = []
    for i, j in chosen:
        image = read_image(dataset.files[i])
        height, width = image.shape[:2]
        _, cx, cy, w, h = dataset.labels[i][j]
        box = np.array([[(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]])
        side = max(8, int(round(max(w * width, h * height))))
        crops.append(crop_boxes(image, box, side, margin=0.0)[0])
    return crops


def pasted_image(crops: Sequence[np.ndarray], side: int = IMAGE_SIDE) -> np.ndarray:
    """A BGR image of `side` pixels with each RGB crop scaled to `side * BALL_SHARE` in its own cell
    of a square grid (4 x 4 for up to 16 balls), centred."""
    cells = max(4, math.ceil(math.sqrt(len(crops))))
    cell = side // cells
    ball = int(round(side * BALL_SHARE))
    canvas = np.full((side, side, 3), PAD_VALUE, np.uint8)
    for n, crop in enumerate(crops):
        row, col = divmod(n, cells)
        y0, x0 = row * cell + (cell - ball) // 2, col * cell + (cell - ball) // 2
        canvas[y0:y0 + ball, x0:x0 + ball] = cv2.resize(crop, (ball, ball), interpolation=cv2.INTER_AREA)[..., ::-1]
    return canvas


def ball_images(spec: DataSpec, counts: Sequence[int] = BALL_COUNTS, side: int = IMAGE_SIDE, seed: int = 0
                ) -> dict[int, np.ndarray]:
    """One pasted BGR image per ball count; smaller counts hold the first balls of the largest."""
    crops = ball_crops(spec, max(counts), seed=seed)
    return {count: pasted_image(crops[:count], side) for count in counts}
