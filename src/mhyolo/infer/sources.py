"""What `predict` can read: one image, a folder of images, or a video file.

Every source yields `Frame`s. An image that cannot be decoded becomes a frame with
an `error` instead of an exception, so one bad file among thousands is reported by
name and the run goes on; a source that cannot be opened at all is a `DataError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mhyolo.data.spec import IMAGE_SUFFIXES
from mhyolo.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class Frame:
    """One image to predict on: `image` (BGR uint8) or, when it could not be read, `error`."""

    name: str  # file name, or "<video name>:<frame number>"
    path: Path  # the file it came from
    image: np.ndarray | None = None
    error: str | None = None
    index: int | None = None  # frame number within a video

    @property
    def ok(self) -> bool:
        return self.error is None


def read_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Decode an image as BGR; returns (image, None) or (None, reason) without raising."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if data.size == 0:
        return None, "empty file"
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        return None, "cannot decode image (corrupt or truncated)"
    return image, None


class ImageSource:
    """A single image file or the images of a folder (not recursive), sorted by name."""

    is_video = False

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files:
            image, error = read_image(path)
            yield Frame(name=path.name, path=path, image=image, error=error)


class VideoSource:
    """Frames of a video file, decoded one by one with OpenCV."""

    is_video = True

    def __init__(self, path: Path) -> None:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise DataError(f"{path}: cannot open video")
        self.path = path
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        capture.release()

    def __len__(self) -> int:
        return self.frame_count  # container's estimate; 0 when unknown

    def __iter__(self) -> Iterator[Frame]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                yield Frame(name=f"{self.path.name}:{index}", path=self.path, image=image, index=index)
                index += 1
        finally:
            capture.release()


def open_source(source: str | Path) -> ImageSource | VideoSource:
    """Pick the reader for `source` by what it is: folder, image suffix or video suffix."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return ImageSource(files)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageSource([path])
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path)
    raise DataError(f"{path}: unknown file type '{suffix}' (images: {', '.join(IMAGE_SUFFIXES)}; "
                    f"videos: {', '.join(VIDEO_SUFFIXES)})")
