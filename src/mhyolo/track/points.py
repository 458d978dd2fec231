"""One ball's position in one frame, as a track holds it and `tracks.csv` writes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DETECTED, REDETECTED, INTERPOLATED = "detected", "redetected", "interpolated"


def box_centre(box: tuple[float, float, float, float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float64)


def box_side(box: tuple[float, float, float, float]) -> float:
    """The side of the square of the box's area: one size for a ball whatever its box's aspect."""
    x1, y1, x2, y2 = box
    return float(np.sqrt(max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)))


class BoxGeometry:
    """The centre and the side of an object's `box` (xyxy), for every kind of ball position."""

    box: tuple[float, float, float, float]

    @property
    def centre(self) -> np.ndarray:
        return box_centre(self.box)

    @property
    def side(self) -> float:
        return box_side(self.box)


@dataclass
class TrackPoint(BoxGeometry):
    """A ball in frame `frame`: its box (xyxy, original pixels), score and type, and how it was found
    (`detected` by the whole-frame pass, `redetected` in the window a track pointed to, or `interpolated`
    across a short gap: never a detection)."""

    frame: int
    track: int
    box: tuple[float, float, float, float]
    score: float
    type_name: str | None = None
    source: str = DETECTED
    time: float = 0.0  # seconds from the first frame
    speed: float | None = None  # px/s over the step from the track's previous point


    @property
    def interpolated(self) -> bool:
        return self.source == INTERPOLATED

    def row(self) -> dict[str, Any]:
        """The point as a `tracks.csv` row / JSON object: centre, size, and every field."""
        x, y = self.centre
        x1, y1, x2, y2 = self.box
        return {"frame": self.frame, "time": round(self.time, 4), "track": self.track, "x": round(float(x), 2),
                "y": round(float(y), 2), "w": round(x2 - x1, 2), "h": round(y2 - y1, 2), "score": round(self.score, 4),
                "type": self.type_name or "", "source": self.source, "interpolated": int(self.interpolated),
                "speed": "" if self.speed is None else round(self.speed, 1)}


ROW_FIELDS = ("frame", "time", "track", "x", "y", "w", "h", "score", "type", "source", "interpolated", "speed")
