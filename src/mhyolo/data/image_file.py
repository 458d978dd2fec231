"""An image file decoded as the training data is: RGB uint8, a clear error naming a file that does not
decode. Without PyTorch, so calibration (the RKNN converter on a board's PC, the INT8 formats) reads
images as the dataset does without loading the training code."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mhyolo.errors import DataError


def read_image(path: Path) -> np.ndarray:
    """Decode an image as RGB uint8 HWC; a file that does not decode is a DataError naming it."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image); run `mhyolo data verify`")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
