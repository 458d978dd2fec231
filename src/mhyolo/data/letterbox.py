"""The one letterbox of training, validation and inference: resize keeping the aspect ratio, pad
with grey 114, as the official weights were trained; `infer.preprocess` hands it to every runtime."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mhyolo.defaults import DEFAULT_IMGSZ

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxInfo:
    """How an original image was mapped into the network input: new = old * ratio + pad."""

    ratio: float
    pad: tuple[float, float]  # (left, top) padding in pixels of the network input
    original_shape: tuple[int, int]  # (height, width)


def letterbox(image: np.ndarray, new_shape: int | tuple[int, int] = DEFAULT_IMGSZ, scaleup: bool = True,
              stride: int | None = None) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w) with grey.

    With `stride` set, pad only to the next multiple of `stride` (minimal padding,
    used for rectangular validation batches); otherwise pad to exactly `new_shape`.
    """
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    h0, w0 = image.shape[:2]
    ratio = min(new_shape[0] / h0, new_shape[1] / w0)
    if not scaleup:
        ratio = min(ratio, 1.0)
    new_w, new_h = int(round(w0 * ratio)), int(round(h0 * ratio))
    pad_w, pad_h = new_shape[1] - new_w, new_shape[0] - new_h
    if stride is not None:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    if (new_w, new_h) != (w0, h0):
        interpolation = cv2.INTER_LINEAR if ratio > 1 else cv2.INTER_AREA
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = pad_h // 2, pad_w // 2
    bottom, right = pad_h - top, pad_w - left
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                               value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    return image, LetterboxInfo(ratio=ratio, pad=(float(left), float(top)), original_shape=(h0, w0))
