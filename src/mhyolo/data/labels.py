"""YOLO label files: one `class cx cy w h` line per box, normalised to [0, 1]; a segmentation export
(`class x1 y1 ... xk yk` polygons, most of the file's lines) gives each polygon's box (`data.segments`).

`read_labels` never guesses: a line that is not exactly five numbers, an unknown
class id, a coordinate outside [0, 1] or a non-positive size is reported as a
`LabelIssue` naming the file and line, and the line is left out. Callers decide
whether an issue drops the image (verification) or is fatal (training).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mhyolo.data.label_issues import COORD_EPS, LabelIssue
from mhyolo.data.segments import is_polygon_file, parse_segments

__all__ = ["COORD_EPS", "LabelIssue", "read_labels", "write_labels", "boxes_to_bytes", "boxes_from_bytes"]


def read_labels(path: str | Path, nc: int | None = None) -> tuple[np.ndarray, list[LabelIssue]]:
    """Parse a label file into an (n, 5) float32 array [cls, cx, cy, w, h] plus the issues found.

    A missing file means an image with no boxes (a negative), which is valid. Read with plain
    file functions: a `Path` made per label would be the one object a scan of 100,000 images
    still makes per image.
    """
    boxes: list[list[float]] = []
    issues: list[LabelIssue] = []

    def issue(line: int, reason: str) -> LabelIssue:
        return LabelIssue(Path(path), line, reason)

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return np.zeros((0, 5), np.float32), issues
    except (OSError, UnicodeDecodeError) as exc:
        return np.zeros((0, 5), np.float32), [issue(0, f"cannot read: {exc}")]
    if is_polygon_file(text):  # a segmentation export: each polygon's box (its lines checked as polygons)
        segments, issues = parse_segments(text, path, nc)
        return np.array([s.box() for s in segments], np.float32).reshape(-1, 5), issues
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 5:
            kind = "polygon/segment" if len(fields) > 5 and len(fields) % 2 == 1 else "malformed"
            issues.append(issue(lineno, f"{kind} line: expected 5 numbers, got {len(fields)}"))
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            issues.append(issue(lineno, f"not a number in {line!r}"))
            continue
        if not all(math.isfinite(v) for v in values):
            issues.append(issue(lineno, f"non-finite value in {line!r}"))
            continue
        cls, cx, cy, w, h = values
        if cls != int(cls) or cls < 0:
            issues.append(issue(lineno, f"class id {fields[0]!r} is not a non-negative integer"))
            continue
        if nc is not None and int(cls) >= nc:
            issues.append(issue(lineno, f"class id {int(cls)} out of range (nc={nc})"))
            continue
        if w <= 0 or h <= 0:
            issues.append(issue(lineno, f"non-positive box size w={w} h={h}"))
            continue
        coords = (cx, cy, w, h, cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2)
        if any(c < -COORD_EPS or c > 1 + COORD_EPS for c in coords):
            issues.append(issue(lineno, f"box outside [0, 1]: {' '.join(fields[1:])}"))
            continue
        boxes.append([cls, cx, cy, w, h])
    array = np.array(boxes, np.float32).reshape(-1, 5)
    array[:, 1:] = np.clip(array[:, 1:], 0.0, 1.0)
    return array, issues


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Write an (n, 5) array in YOLO format with 6 decimals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in np.asarray(labels).reshape(-1, 5)]
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def boxes_to_bytes(boxes: np.ndarray) -> bytes:
    """An (n, 5) box array as float32 bytes: about 60 bytes for a box or two where an array object
    takes about 200, for records kept per image through a build."""
    return np.ascontiguousarray(boxes, dtype=np.float32).tobytes()


def boxes_from_bytes(data: bytes) -> np.ndarray:
    """`boxes_to_bytes` undone: a read-only (n, 5) float32 view of `data`."""
    return np.frombuffer(data, dtype=np.float32).reshape(-1, 5)
