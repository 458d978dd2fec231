"""YOLO segmentation labels: one `class x1 y1 x2 y2 ... xk yk` polygon per object, normalised to [0, 1]
(the format ultralytics and Roboflow export), and the masks made from them.

`read_segments` never guesses, as `labels.read_labels` does for boxes: a line with fewer than three
points or an odd number of coordinates, a coordinate outside [0, 1], a polygon that crosses itself, an
unknown class id, or a box line in a file of polygons (or the reverse) is a `LabelIssue` naming the
file and line, and the line is left out. The polygon's box is its bounding rectangle, so a detector
trains on a segmentation set unchanged.

For data with boxes only (the ball sets), `ellipse_polygon` gives each box the ellipse inscribed in it:
a ball is round, so that is its outline when nothing hides part of it (occlusion is not modelled).
Masks are rasterised by OpenCV (`polygon_mask`) and traced back by its contours (`mask_polygon`);
polygon validity is Shapely's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mhyolo.data.label_issues import COORD_EPS, LabelIssue

MIN_POINTS = 3
ELLIPSE_POINTS = 48  # vertices of an inscribed ellipse: its area within 0.3 % of the true ellipse's


@dataclass(frozen=True)
class Segment:
    """One object's class and outline: (k, 2) float32 points, normalised x, y."""

    cls: int
    points: np.ndarray

    def box(self) -> np.ndarray:
        """The polygon's bounding box as [cls, cx, cy, w, h] (a YOLO box line)."""
        (x1, y1), (x2, y2) = self.points.min(axis=0), self.points.max(axis=0)
        return np.array([self.cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float32)


def _crossing(points: np.ndarray) -> str | None:
    """Why the closed polygon through `points` is not a simple one (None when it is)."""
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    centred = points.astype(np.float64) - points.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-9) < 2:
        return "a polygon of zero area (its points lie on one line)"
    polygon = Polygon(points.astype(np.float64))
    if not polygon.is_valid:
        return explain_validity(polygon).split("[")[0].strip().lower()
    return "a polygon of zero area" if polygon.area <= 0 else None


def read_segments(path: str | Path, nc: int | None = None) -> tuple[list[Segment], list[LabelIssue]]:
    """Parse a segmentation label file into `Segment`s plus the issues found. A missing file is an
    image without objects. Box lines (five numbers) in a file whose other lines are polygons are
    named, as are polygons among box lines: the file's kind is what most of its lines are (boxes on a tie)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [LabelIssue(Path(path), 0, f"cannot read: {exc}")]
    return parse_segments(text, path, nc)


def is_polygon_file(text: str) -> bool:
    """Whether most lines of a label file's text are polygons (more numbers than a box line's five)."""
    counts = [len(raw.split()) for raw in text.splitlines() if raw.strip()]
    return sum(n > 5 for n in counts) > sum(n == 5 for n in counts)


def parse_segments(text: str, path: str | Path, nc: int | None = None) -> tuple[list[Segment], list[LabelIssue]]:
    """`read_segments` of a file's text (`path` names it in the issues)."""
    segments: list[Segment] = []
    issues: list[LabelIssue] = []

    def issue(line: int, reason: str) -> None:
        issues.append(LabelIssue(Path(path), line, reason))

    lines = [(n, raw.split()) for n, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    polygons_file = is_polygon_file(text)
    for lineno, fields in lines:
        if len(fields) == 5:
            if polygons_file:
                issue(lineno, "a box line (5 numbers) in a file of polygons")
            continue
        if not polygons_file:
            issue(lineno, f"a polygon line ({len(fields)} numbers) in a file of boxes")
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            issue(lineno, f"not a number in {' '.join(fields)!r}")
            continue
        if not all(math.isfinite(v) for v in values):
            issue(lineno, "non-finite value")
            continue
        cls, coords = values[0], values[1:]
        if cls != int(cls) or cls < 0:
            issue(lineno, f"class id {fields[0]!r} is not a non-negative integer")
            continue
        if nc is not None and int(cls) >= nc:
            issue(lineno, f"class id {int(cls)} out of range (nc={nc})")
            continue
        if len(coords) % 2:
            issue(lineno, f"an odd number of coordinates ({len(coords)}): x and y must pair up")
            continue
        if len(coords) < 2 * MIN_POINTS:
            issue(lineno, f"a polygon needs at least {MIN_POINTS} points, got {len(coords) // 2}")
            continue
        if any(c < -COORD_EPS or c > 1 + COORD_EPS for c in coords):
            issue(lineno, "a point outside [0, 1]")
            continue
        points = np.clip(np.array(coords, np.float32).reshape(-1, 2), 0.0, 1.0)
        problem = _crossing(points)
        if problem is not None:
            issue(lineno, f"invalid polygon: {problem}")
            continue
        segments.append(Segment(int(cls), points))
    return segments, issues


def write_segments(path: Path, segments: list[Segment]) -> None:
    """Write segments in YOLO segmentation format with 6 decimals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s.cls} " + " ".join(f"{v:.6f}" for v in s.points.reshape(-1)) for s in segments]
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def polygon_mask(points_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean (height, width) mask of the polygon whose points are in pixels (pixel centres inside
    it are set, as COCO's rasteriser does within a pixel's rounding)."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points_px, np.float64) * 16).astype(np.int32)], 1,
                 lineType=cv2.LINE_8, shift=4)  # 4 fractional bits: sub-pixel vertices
    return mask.astype(bool)


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """The outline of a mask's largest region as (k, 2) float32 pixel points ((0, 2) for an empty mask)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)


def ellipse_polygon(box: np.ndarray, points: int = ELLIPSE_POINTS) -> np.ndarray:
    """The ellipse inscribed in a [cx, cy, w, h] box (any units) as (points, 2) float32 vertices."""
    cx, cy, w, h = (float(v) for v in box)
    angles = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    return np.stack([cx + w / 2 * np.cos(angles), cy + h / 2 * np.sin(angles)], axis=1).astype(np.float32)


def ellipse_masks(boxes: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """Boolean (height, width) masks of the ellipses inscribed in (n, 4) xyxy pixel boxes."""
    return [polygon_mask(ellipse_polygon(np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])), shape)
            for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4)]


def box_segments(labels: np.ndarray) -> list[Segment]:
    """Each box of an (n, 5) [cls, cx, cy, w, h] label array as the ellipse inscribed in it (normalised)."""
    return [Segment(int(row[0]), np.clip(ellipse_polygon(row[1:5]), 0.0, 1.0)) for row in np.asarray(labels)]
