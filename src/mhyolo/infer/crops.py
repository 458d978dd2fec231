"""Square crops around boxes: what a crop classifier is trained on and what it sees at inference.

One function for both, so the classifier is never shown a crop made differently from the ones it
learned from. A crop is a square centred on the box, its side the box's long side plus `margin` of
it on every side (context: the court, the grass, the hand), resized to `size`. Where the square
leaves the image the missing part is grey (the letterbox's 114), so a ball at the border keeps its
scale and position in the crop instead of being stretched.
"""

from __future__ import annotations

import cv2
import numpy as np

from mhyolo.infer.preprocess import PAD_VALUE

DEFAULT_MARGIN = 0.2  # context on each side, as a share of the box's long side
MIN_SIDE = 1.0  # pixels: a degenerate box still gets a one-pixel window


def square_windows(boxes: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """(n, 4) xyxy boxes -> (n, 4) xyxy square windows (unclipped, may leave the image)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum((boxes[:, 2:] - boxes[:, :2]).max(axis=1) * (1.0 + 2.0 * margin), MIN_SIDE)
    half = np.stack([side, side], axis=1) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def crop_boxes(image: np.ndarray, boxes: np.ndarray, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """One `size` x `size` crop per box of the (H, W, 3) `image`, same channel order:
    (n, size, size, 3) uint8. The window is rounded to whole pixels, the part inside the image
    cut out, the rest padded grey, and the square resized (area averaging when shrinking)."""
    height, width = image.shape[:2]
    windows = np.round(square_windows(boxes, margin)).astype(np.int64)
    crops = np.empty((len(windows), size, size, 3), dtype=np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(windows):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        top, bottom = np.clip([y0, y1], 0, height)
        left, right = np.clip([x0, x1], 0, width)
        inside = image[top:bottom, left:right]
        if inside.size == 0:  # the window lies wholly outside the image
            crops[i] = PAD_VALUE
            continue
        square = cv2.copyMakeBorder(inside, max(-y0, 0), max(y1 - height, 0), max(-x0, 0), max(x1 - width, 0),
                                    cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
        interpolation = cv2.INTER_AREA if square.shape[0] > size else cv2.INTER_LINEAR
        crops[i] = cv2.resize(square, (size, size), interpolation=interpolation)
    return crops
