"""What `mhyolo track` leaves in its folder: `tracks.csv` (a row per ball per frame), `summary.json` (counts,
cost, candidate bounces, and the scores when labels were given), `tracks.png` (each track's path, the way
each point was found), and `track.mp4` (the clip with the ball's trail)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mhyolo.infer.sources import Frame
from mhyolo.track.points import INTERPOLATED, REDETECTED, ROW_FIELDS
from mhyolo.track.run import TrackResult

TRAIL = 20  # frames of trail drawn behind the ball
COLOURS = {"detected": (0, 200, 0), REDETECTED: (0, 165, 255), INTERPOLATED: (200, 200, 200)}  # BGR


def write_csv(result: TrackResult, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for point in result.points():
            writer.writerow(point.row())
    return path


def write_summary(result: TrackResult, path: Path, extra: dict[str, Any] | None = None) -> Path:
    path.write_text(json.dumps({**result.summary(), **(extra or {})}, indent=2), encoding="utf-8")
    return path


def plot_tracks(result: TrackResult, path: Path) -> Path:
    """Each track's centres in image coordinates (y down), coloured by how each point was found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = result.frame_shape
    fig, ax = plt.subplots(figsize=(8, 8 * height / max(width, 1)))
    for track in result.tracks:
        xy = np.array([p.centre for p in track])
        if len(xy):
            ax.plot(xy[:, 0], xy[:, 1], "-", lw=1, color="0.6")
        for source, colour in COLOURS.items():
            sel = np.array([p.centre for p in track if p.source == source])
            if len(sel):
                ax.scatter(sel[:, 0], sel[:, 1], s=12, color=np.array(colour[::-1]) / 255, label=source)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="upper right")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(f"{len(result.tracks)} track(s), {result.frames} frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_video(result: TrackResult, frames: Iterable[Frame], path: Path) -> Path | None:
    """The clip with each track's last `TRAIL` points drawn behind the ball (None for an empty clip)."""
    by_frame: dict[int, list] = {}
    for point in result.points():
        by_frame.setdefault(point.frame, []).append(point)
    writer = None
    history: list = []
    for number, frame in enumerate(frames):
        image = frame.image.copy()
        history = [p for p in history if p.frame > number - TRAIL] + by_frame.get(number, [])
        for a, b in zip(history, history[1:]):
            if a.track == b.track:
                cv2.line(image, tuple(int(v) for v in a.centre), tuple(int(v) for v in b.centre),
                         COLOURS[b.source], 2, cv2.LINE_AA)
        for point in by_frame.get(number, []):
            x1, y1, x2, y2 = (int(round(v)) for v in point.box)
            cv2.rectangle(image, (x1, y1), (x2, y2), COLOURS[point.source], 2)
        if writer is None:
            height, width = image.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), result.fps, (width, height))
        writer.write(image)
    if writer is None:
        return None
    writer.release()
    return path
