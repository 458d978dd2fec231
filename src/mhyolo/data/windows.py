"""What a window cut from a larger image does to the boxes crossing its edges.

Sliced inference (`infer/slicing.py`) and slice-aided training (`data/slices.py`) both look at
an image through windows, and both follow this one rule: a box whose part inside the window
comes within `EDGE_MARGIN` pixels of an *inner* edge (an edge of the window that is not an edge
of the image) is cut by the window, and the window drops it. At inference the overlap between
tiles, or the whole-image pass, shows that object whole elsewhere; in training the same rule
means a window is labelled exactly as the sliced predictor would read it. Every other box is
kept, clipped to the window (it can only leave the window across an image edge, which clipping
to the image already settled).
"""

from __future__ import annotations

import numpy as np

EDGE_MARGIN = 2.0  # pixels: a box this close to an inner window edge is cut by the window

# (x0, y0, x1, y1) in image pixels; x1, y1 exclusive and at most the image's width, height
Window = tuple[int, int, int, int]


def cut_by_window(boxes: np.ndarray, window: Window, shape: tuple[int, int]) -> np.ndarray:
    """Which boxes (xyxy in the window's own pixels) an inner edge of `window` cuts.

    `shape` is the (height, width) of the whole image, which says which edges are inner.
    A box is judged by its part inside the window, so a ground-truth box reaching past the
    edge and a prediction that stops at it are judged alike.
    """
    x0, y0, x1, y1 = window
    height, width = shape
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    inside = np.empty_like(boxes)
    inside[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, x1 - x0)
    inside[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, y1 - y0)
    cut = np.zeros(len(boxes), bool)
    if x0 > 0:
        cut |= inside[:, 0] <= EDGE_MARGIN
    if y0 > 0:
        cut |= inside[:, 1] <= EDGE_MARGIN
    if x1 < width:
        cut |= inside[:, 2] >= (x1 - x0) - EDGE_MARGIN
    if y1 < height:
        cut |= inside[:, 3] >= (y1 - y0) - EDGE_MARGIN
    return cut


def boxes_in_window(boxes: np.ndarray, types: np.ndarray, window: Window,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in image pixels -> the window's labels: shifted to its pixels, clipped to it, without
    the boxes it cuts (`cut_by_window`) and those with nothing inside it."""
    x0, y0, x1, y1 = window
    shifted = np.asarray(boxes, np.float32).reshape(-1, 4) - np.array([x0, y0, x0, y0], np.float32)
    types = np.asarray(types, np.int64).reshape(-1)
    clipped = shifted.copy()
    clipped[:, [0, 2]] = np.clip(shifted[:, [0, 2]], 0, x1 - x0)
    clipped[:, [1, 3]] = np.clip(shifted[:, [1, 3]], 0, y1 - y0)
    keep = ~cut_by_window(shifted, window, shape)
    keep &= (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep], types[keep]
