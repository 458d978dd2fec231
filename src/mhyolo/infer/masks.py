"""Instance masks of kept boxes, from a mask head's prototypes and each box's coefficients (NumPy and
OpenCV only, like the rest of `infer`).

A box's mask is coefficients . prototypes on the prototype grid (a quarter of the input size), read at
every original-image pixel of the box through the letterbox (bilinear, `cv2.remap`) and thresholded at
logit 0 (probability 0.5). Only the box's own pixels are computed and kept (`BoxMask`: a boolean crop
and where it sits), so a validation at a low score threshold, a few hundred boxes per image, holds a
few crops per box rather than a full-image mask each.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mhyolo.data.letterbox import LetterboxInfo
from mhyolo.data.segments import mask_polygon


@dataclass(frozen=True)
class BoxMask:
    """One box's mask: `crop` (h, w) bool whose top-left pixel is (`top`, `left`) of an image of
    `image_shape` (height, width)."""

    top: int
    left: int
    crop: np.ndarray
    image_shape: tuple[int, int]

    def full(self) -> np.ndarray:
        """The mask as a boolean array of the whole image."""
        out = np.zeros(self.image_shape, bool)
        out[self.top:self.top + self.crop.shape[0], self.left:self.left + self.crop.shape[1]] = self.crop
        return out

    def outline(self) -> np.ndarray:
        """The outline of the mask's largest region, (k, 2) int pixel points of the image ((0, 2) when empty)."""
        return mask_polygon(self.crop).astype(np.int64) + np.array([self.left, self.top])


def instance_masks(prototypes: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray, stride: int,
                   info: LetterboxInfo | None = None) -> list[BoxMask]:
    """One `BoxMask` per box: prototypes (nm, h, w), coefficients (n, nm), boxes (n, 4) xyxy in
    network-input pixels; `info` maps the input back to the original image (None: input pixels)."""
    nm, h, w = prototypes.shape
    if info is None:
        ratio, (left, top), shape = 1.0, (0.0, 0.0), (h * stride, w * stride)
    else:
        ratio, (left, top), shape = info.ratio, info.pad, tuple(int(v) for v in info.original_shape)
    height, width = shape
    logits = (coefficients.astype(np.float32) @ prototypes.reshape(nm, -1).astype(np.float32)).reshape(-1, h, w)
    masks = []
    for box, logit in zip(np.asarray(boxes, np.float64), logits):
        # the box in original pixels (whole pixels that the box covers at least half of)
        x1, x2 = ((box[[0, 2]] - left) / ratio).clip(0, width)
        y1, y2 = ((box[[1, 3]] - top) / ratio).clip(0, height)
        c0, c1 = int(round(x1)), int(round(x2))
        r0, r1 = int(round(y1)), int(round(y2))
        if c1 <= c0 or r1 <= r0:
            masks.append(BoxMask(r0, c0, np.zeros((max(r1 - r0, 0), max(c1 - c0, 0)), bool), shape))
            continue
        # each pixel centre of the box, as a position on the prototype grid (pixel centres at +0.5)
        xs = (((np.arange(c0, c1) + 0.5) * ratio + left) / stride - 0.5).astype(np.float32)
        ys = (((np.arange(r0, r1) + 0.5) * ratio + top) / stride - 0.5).astype(np.float32)
        map_x, map_y = np.meshgrid(xs, ys)
        values = cv2.remap(np.ascontiguousarray(logit), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        masks.append(BoxMask(r0, c0, values > 0.0, shape))
    return masks
