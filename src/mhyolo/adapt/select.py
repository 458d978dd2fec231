"""Which of the teacher's boxes become pseudo-labels and which become ignore regions.

A box at or above the keep threshold is a pseudo-label; one between the ignore and keep thresholds
is an ignore region (the teacher is unsure: it trains neither as a ball nor as background). On a
video, a kept box with no ball near it in a neighbouring sampled frame (`adapt.temporal`, every box
above the ignore threshold counting as a ball there) is a likely one-frame false alarm: it becomes an
ignore region too, not background, since the teacher was sure of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mhyolo.adapt.teacher import ImageBoxes
from mhyolo.adapt.temporal import temporally_consistent


@dataclass
class Selection:
    """One image's boxes sorted into pseudo-labels and ignore regions."""

    item: ImageBoxes
    keep: np.ndarray  # (n,) bool: pseudo-labels
    ignore: np.ndarray  # (n,) bool: ignore regions (unsure, or dropped by the temporal filter)
    lonely: np.ndarray  # (n,) bool: confident but alone in time (a subset of `ignore`)


def select_boxes(items: Sequence[ImageBoxes], keep: float, temporal_k: float = 0.0) -> list[Selection]:
    """`temporal_k` > 0: `items` are consecutive sampled frames and the temporal filter applies."""
    confident = [item.scores >= keep for item in items]
    lonely = [np.zeros(len(item.scores), bool) for item in items]
    if temporal_k > 0:
        consistent = temporally_consistent([item.boxes[mask] for item, mask in zip(items, confident)], temporal_k,
                                           support=[item.boxes for item in items])
        for i, (mask, ok) in enumerate(zip(confident, consistent)):
            lonely[i][np.flatnonzero(mask)[~ok]] = True
    return [Selection(item, mask & ~alone, ~mask | alone, alone)
            for item, mask, alone in zip(items, confident, lonely)]
