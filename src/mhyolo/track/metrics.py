"""The ball-tracking field's score: per frame, a predicted ball position against the labelled one, with a
distance tolerance in pixels (as TrackNet and its successors report it).

Per frame: TP, the ball is visible and predicted within `tolerance`; FP, a ball is predicted farther than
that from a visible ball, or predicted where none is visible; FN, a visible ball is not predicted.
Precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean. Labels come as TrackNet's
`Label.csv` (file name, visibility, x, y; a header row) or as one YOLO label file per frame.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mhyolo.errors import DataError


@dataclass(frozen=True)
class BallLabel:
    visible: bool
    x: float
    y: float


@dataclass(frozen=True)
class TrackScore:
    tolerance: float
    tp: int
    fp: int
    fn: int
    frames: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"tolerance_px": self.tolerance, "tp": self.tp, "fp": self.fp, "fn": self.fn, "frames": self.frames,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


def score_positions(predicted: dict[str, np.ndarray | None], labels: dict[str, BallLabel],
                    tolerance: float) -> TrackScore:
    """`predicted`: frame name -> the (x, y) the tracker reports (None: no ball); every labelled frame counts
    (a frame without a prediction is a prediction of no ball)."""
    tp = fp = fn = 0
    for name, label in labels.items():
        guess = predicted.get(name)
        if guess is None:
            fn += int(label.visible)
        elif not label.visible:
            fp += 1
        elif float(np.hypot(guess[0] - label.x, guess[1] - label.y)) <= tolerance:
            tp += 1
        else:
            fp += 1
    return TrackScore(tolerance=tolerance, tp=tp, fp=fp, fn=fn, frames=len(labels))


def read_label_csv(path: Path) -> dict[str, BallLabel]:
    """TrackNet's `Label.csv`: a header, then `file name, visibility, x, y` per frame (x, y empty when the
    ball is not visible). A bad row is refused naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the labels: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise DataError(f"{path}: empty labels file (expected a header and `file name, visibility, x, y` rows)")
    labels: dict[str, BallLabel] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 4:
            raise DataError(f"{path}:{line}: expected `file name, visibility, x, y`, got {','.join(row)!r}")
        name, visibility, x, y = (cell.strip() for cell in row[:4])
        try:
            visible = int(float(visibility)) > 0
            labels[name] = BallLabel(visible, float(x) if visible else 0.0, float(y) if visible else 0.0)
        except ValueError:
            raise DataError(f"{path}:{line}: visibility, x and y must be numbers, got {','.join(row)!r}") from None
    return labels


def write_label_csv(path: Path, labels: dict[str, BallLabel]) -> None:
    """The same format, for generated clips."""
    lines = ["file name,visibility,x-coordinate,y-coordinate"]
    for name, label in labels.items():
        lines.append(f"{name},{int(label.visible)},{label.x:.1f},{label.y:.1f}" if label.visible else f"{name},0,,")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class IdentityScore:
    """How well tracks keep each ball's identity: a switch is a ball matched to another track than the
    last one it was matched to; fragments are the tracks a ball was matched to, less one."""

    switches: int
    fragments: int
    matched: int  # ball-frames matched to some track within the tolerance
    visible: int  # ball-frames where a ball is visible

    def to_dict(self) -> dict[str, int]:
        return {"id_switches": self.switches, "fragments": self.fragments, "matched": self.matched,
                "visible": self.visible}


def score_identities(tracks: dict[int, dict[int, np.ndarray]], balls: list[list[BallLabel]],
                     tolerance: float) -> IdentityScore:
    """`tracks`: track id -> {frame: centre}; `balls`: each ball's label per frame. Per frame each visible
    ball is matched to the track whose point there is nearest, within `tolerance`."""
    switches = fragments = matched = visible = 0
    for labels in balls:
        last, seen = None, set()
        for frame, label in enumerate(labels):
            if not label.visible:
                continue
            visible += 1
            near = [(float(np.hypot(c[0] - label.x, c[1] - label.y)), tid) for tid, points in tracks.items()
                    for f, c in points.items() if f == frame]
            near = [(d, tid) for d, tid in near if d <= tolerance]
            if not near:
                continue
            tid = min(near)[1]
            matched += 1
            switches += int(last is not None and tid != last)
            last = tid
            seen.add(tid)
        fragments += max(len(seen) - 1, 0)
    return IdentityScore(switches=switches, fragments=fragments, matched=matched, visible=visible)
