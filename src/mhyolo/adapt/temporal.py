"""Temporal consistency: a ball seen in one sampled frame of a video is near a ball in the next
or the previous one; a box with nothing near it in either is most likely a one-frame false alarm.

A pure function on box lists, so it is tested on synthetic sequences and applies to any source of
boxes. "Near" is measured from the box's own size: the centres are at most `k` times the box's
long side apart, which tolerates the motion between samples of a ball that size moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def temporally_consistent(boxes: Sequence[np.ndarray], k: float,
                          support: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Per frame, a boolean mask over its `boxes` ((n, 4) xyxy): True where a box of a neighbouring
    frame (the one before or after) has its centre within `k` x this box's long side.

    `support` (same frames, default `boxes`) are the boxes that count as "a ball found" in the
    neighbours, e.g. every box above a low score where `boxes` are only the confident ones.
    """
    frames = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
    seen = frames if support is None else [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in support]
    if len(seen) != len(frames):
        raise ValueError(f"support covers {len(seen)} frames, boxes {len(frames)}")
    masks: list[np.ndarray] = []
    for i, current in enumerate(frames):
        keep = np.zeros(len(current), dtype=bool)
        if len(current):
            centres = _centres(current)
            reach = k * (current[:, 2:] - current[:, :2]).max(axis=1)
            for j in (i - 1, i + 1):
                if 0 <= j < len(seen) and len(seen[j]):
                    distance = np.linalg.norm(centres[:, None] - _centres(seen[j])[None], axis=2)
                    keep |= (distance <= reach[:, None]).any(axis=1)
        masks.append(keep)
    return masks
