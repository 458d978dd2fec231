"""A finished track made into a trajectory: isolated jumps removed, short gaps interpolated (flagged, never
counted as detections), times and speeds, and the frames where the vertical motion turns (candidate
bounces and hits)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mhyolo.track.points import INTERPOLATED, TrackPoint


def drop_jumps(points: list[TrackPoint], max_step: float) -> list[TrackPoint]:
    """Points that leave the path and come straight back: a point whose steps from its previous and to its
    next point both exceed `max_step` per frame while its neighbours lie within reach of each other."""
    kept = list(points)
    i = 1
    while i < len(kept) - 1:
        before, point, after = kept[i - 1], kept[i], kept[i + 1]

        def step(a: TrackPoint, b: TrackPoint) -> float:
            return float(np.linalg.norm(b.centre - a.centre)) / max(b.frame - a.frame, 1)

        if step(before, point) > max_step and step(point, after) > max_step and step(before, after) <= max_step:
            del kept[i]
            continue
        i += 1
    return kept


def fill_gaps(points: list[TrackPoint], max_gap: int) -> list[TrackPoint]:
    """Every missing frame between two points at most `max_gap` frames apart, on the straight segment
    between them (box centre and size linearly), flagged `interpolated` with no score."""
    if max_gap < 1 or len(points) < 2:
        return list(points)
    out: list[TrackPoint] = [points[0]]
    for a, b in zip(points, points[1:]):
        missing = b.frame - a.frame - 1
        if 0 < missing <= max_gap:
            box_a, box_b = np.asarray(a.box, np.float64), np.asarray(b.box, np.float64)
            for k in range(1, missing + 1):
                w = k / (missing + 1)
                box = tuple(float(v) for v in (1 - w) * box_a + w * box_b)
                out.append(TrackPoint(frame=a.frame + k, track=a.track, box=box, score=0.0,
                                      type_name=a.type_name, source=INTERPOLATED))
        out.append(b)
    return out


def timed(points: list[TrackPoint], fps: float) -> list[TrackPoint]:
    """Each point's time (frame / fps) and speed in px/s over the step from the previous point."""
    out: list[TrackPoint] = []
    for i, point in enumerate(points):
        speed = None
        if i:
            previous = points[i - 1]
            dt = (point.frame - previous.frame) / fps
            speed = float(np.linalg.norm(point.centre - previous.centre)) / dt if dt > 0 else None
        out.append(replace(point, time=point.frame / fps, speed=speed))
    return out


def vote_type(points: list[TrackPoint]) -> str | None:
    """The track's type: the type named most often over its detected points, weighted by score."""
    weights: dict[str, float] = {}
    for point in points:
        if point.type_name and not point.interpolated:
            weights[point.type_name] = weights.get(point.type_name, 0.0) + point.score
    return max(weights, key=weights.get) if weights else None


def turns(points: list[TrackPoint], min_rise: float = 2.0) -> list[int]:
    """Frames where the vertical motion changes direction by at least `min_rise` pixels on each side:
    a ball's bounce (down, then up) or a hit. Candidates only, flagged as such in the outputs."""
    if len(points) < 3:
        return []
    y = np.array([p.centre[1] for p in points])
    frames = [p.frame for p in points]
    found = []
    for i in range(1, len(y) - 1):
        left, right = y[i] - y[:i].min(), y[i] - y[i + 1:].min()  # image y grows downwards: a bounce is a maximum
        if y[i] >= y[i - 1] and y[i] > y[i + 1] and left >= min_rise and right >= min_rise:
            found.append(frames[i])
    return found
