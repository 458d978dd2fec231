"""Mosaic and mixup: the two YOLOv5 augmentations albumentations has no transform for.

Both are pure functions of their inputs (the caller draws the random centre and
blend ratio), which keeps them easy to test and reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mhyolo.data.letterbox import PAD_VALUE

# One tile: an HWC image, its boxes as pixel xyxy (n, 4) and their type ids (n,).
Tile = tuple[np.ndarray, np.ndarray, np.ndarray]


def mosaic4(tiles: Sequence[Tile], size: int, center: tuple[int, int]) -> Tile:
    """Place four images around `center` on a grey (2*size)^2 canvas.

    Tile 0 ends at the centre (top-left quadrant), 1 starts right of it (top-right),
    2 below-left, 3 below-right; whatever falls outside the canvas is cut. Boxes are
    shifted with their tile and clipped to the canvas; a box with nothing left on
    the canvas is removed.
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic needs 4 tiles, got {len(tiles)}")
    side = 2 * size
    xc, yc = int(center[0]), int(center[1])
    channels = tiles[0][0].shape[2]
    canvas = np.full((side, side, channels), PAD_VALUE, dtype=tiles[0][0].dtype)
    all_boxes, all_types = [], []
    for slot, (image, boxes, types) in enumerate(tiles):
        h, w = image.shape[:2]
        ox = xc - w if slot in (0, 2) else xc  # canvas position of the image's top-left corner
        oy = yc - h if slot in (0, 1) else yc
        x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + w, side), min(oy + h, side)
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = image[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
        shifted = np.asarray(boxes, np.float32).reshape(-1, 4) + np.array([ox, oy, ox, oy], np.float32)
        all_boxes.append(shifted)
        all_types.append(np.asarray(types, np.int64).reshape(-1))
    boxes = np.clip(np.concatenate(all_boxes), 0, side)
    types = np.concatenate(all_types)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return canvas, boxes[keep], types[keep]


def mixup(first: Tile, second: Tile, ratio: float) -> Tile:
    """Blend two same-sized images (`ratio` of the first) and keep the boxes of both."""
    image_a, boxes_a, types_a = first
    image_b, boxes_b, types_b = second
    if image_a.shape != image_b.shape:
        raise ValueError(f"mixup needs images of one shape, got {image_a.shape} and {image_b.shape}")
    blended = image_a.astype(np.float32) * ratio + image_b.astype(np.float32) * (1.0 - ratio)
    image = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    boxes = np.concatenate([np.asarray(boxes_a, np.float32).reshape(-1, 4), np.asarray(boxes_b, np.float32).reshape(-1, 4)])
    types = np.concatenate([np.asarray(types_a, np.int64).reshape(-1), np.asarray(types_b, np.int64).reshape(-1)])
    return image, boxes, types
