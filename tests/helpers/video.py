"""Short test clips written with OpenCV."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float = 5.0) -> Path:
    """An `.mp4` of the BGR `frames` (all of one size) at `fps`."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
