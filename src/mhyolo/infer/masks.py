"""Instance masks of kept boxes, from a mask head's prototypes and each box's coefficients (NumPy and
OpenCV only, like the rest of `infer`).

A box's mask is sigmoid(coefficients . prototypes) on the prototype grid (a quarter of the input size),
resized to the network input, kept inside the box, mapped back through the letterbox to the original
image and thresholded at 0.5: one boolean (height, width) array per box in the original image's pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from mhyolo.data.letterbox import LetterboxInfo

MASK_THRESHOLD = 0.5
CV_MAX_CHANNELS = 512  # OpenCV resizes at most this many channels at once


def _resize_stack(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, h, w) float32 -> (n, height, width), bilinear, in chunks OpenCV takes."""
    out = np.empty((values.shape[0], height, width), np.float32)
    for start in range(0, values.shape[0], CV_MAX_CHANNELS):
        chunk = np.ascontiguousarray(values[start:start + CV_MAX_CHANNELS].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_LINEAR)
        out[start:start + CV_MAX_CHANNELS] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def instance_masks(prototypes: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray, stride: int,
                   info: LetterboxInfo | None = None) -> np.ndarray:
    """Boolean masks (n, H0, W0) of n boxes: prototypes (nm, h, w), coefficients (n, nm), boxes (n, 4) xyxy
    in network-input pixels; `info` maps the input back to the original image (None: input pixels)."""
    nm, h, w = prototypes.shape
    height, width = h * stride, w * stride
    n = len(boxes)
    if info is None:
        out_shape = (height, width)
    else:
        out_shape = tuple(int(v) for v in info.original_shape)
    if n == 0:
        return np.zeros((0, *out_shape), bool)
    logits = (coefficients.astype(np.float32) @ prototypes.reshape(nm, -1).astype(np.float32)).reshape(n, h, w)
    probs = _resize_stack(1.0 / (1.0 + np.exp(-logits)), width, height)
    ys = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
    x1, y1, x2, y2 = (boxes[:, i, None, None].astype(np.float32) for i in range(4))
    probs *= (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    if info is not None:  # the part of the input that is the image, resized to the image
        h0, w0 = out_shape
        left, top = info.pad
        x0, y0 = int(round(left)), int(round(top))
        x1i = min(width, int(round(left + w0 * info.ratio)))
        y1i = min(height, int(round(top + h0 * info.ratio)))
        probs = _resize_stack(probs[:, y0:y1i, x0:x1i], w0, h0)
    return probs > MASK_THRESHOLD
