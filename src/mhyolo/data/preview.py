"""A picture of a batch with its boxes drawn: the quickest check that labels follow augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from mhyolo.data.dataset import Batch

# One BGR colour per type id (cycled when there are more types).
_COLOURS = ((0, 140, 255), (60, 200, 60), (255, 90, 0), (200, 0, 200), (0, 220, 220))


def draw_batch(batch: Batch, type_names: Sequence[str] | None = None, columns: int | None = None) -> np.ndarray:
    """Tile the batch's images (BGR uint8) with each box outlined in its type's colour and named."""
    images = batch.images.permute(0, 2, 3, 1).numpy()  # B, H, W, 3 (RGB)
    count, height, width = images.shape[:3]
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, np.uint8)
    targets = batch.targets.numpy()
    for i in range(count):
        tile = np.ascontiguousarray(images[i][:, :, ::-1])
        for _, kind, cx, cy, w, h in targets[targets[:, 0] == i]:
            colour = _COLOURS[int(kind) % len(_COLOURS)]
            x1, y1 = int(round((cx - w / 2) * width)), int(round((cy - h / 2) * height))
            x2, y2 = int(round((cx + w / 2) * width)), int(round((cy + h / 2) * height))
            cv2.rectangle(tile, (x1, y1), (x2, y2), colour, 2)
            name = type_names[int(kind)] if type_names and int(kind) < len(type_names) else str(int(kind))
            cv2.putText(tile, name, (x1 + 2, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        row, col = divmod(i, columns)
        grid[row * height:(row + 1) * height, col * width:(col + 1) * width] = tile
    return grid
