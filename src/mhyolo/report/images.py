"""Images inlined into the page as data URIs.

Plots (lines and text on white) stay PNG: small, and sharp. A large picture is a grid of
photos (`val_predictions.png` is 2-3 MB as PNG) and is re-encoded as JPEG when that is
smaller, so a cross-validation page with one grid per fold stays a few MB that a phone opens.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mhyolo.errors import DataError

KEEP_BELOW_BYTES = 400_000  # smaller files are inlined as they are
JPEG_QUALITY = 85


@dataclass
class InlineImage:
    uri: str
    width: int
    height: int
    mime: str
    source_bytes: int  # the file's own size, before any re-encoding


def inline_image(path: Path) -> InlineImage:
    """`path` as a data URI; refuses a file that does not decode as an image, by name."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image")
    height, width = image.shape[:2]
    mime = _mime(data, path)
    if len(data) > KEEP_BELOW_BYTES:
        if image.ndim == 3 and image.shape[2] == 4:  # JPEG has no alpha: flatten on white
            alpha = image[:, :, 3:].astype(np.float32) / 255.0
            image = (image[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok and len(jpeg) < len(data):
            data, mime = jpeg.tobytes(), "image/jpeg"
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return InlineImage(uri, width, height, mime, path.stat().st_size)


def _mime(data: bytes, path: Path) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    raise DataError(f"{path}: only PNG and JPEG figures are inlined")
