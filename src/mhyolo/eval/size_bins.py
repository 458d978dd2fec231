"""Ball-size bins: the one table of sizes every score per ball size is reported in.

A box's size is sqrt(w * h) in the original image's pixels. The bins are COCO's small /
medium / large with COCO's small split at 16 px, because many balls in users' photos are
far below 32 px. Each bin is handed to the COCO evaluator as an area range
(`params.areaRng`, area = w * h), so a bin follows COCO's rules: ground truth outside the
range is ignored, detections matched to ignored ground truth and unmatched detections outside
the range are ignored, and both bounds are inclusive (a box of exactly 32 x 32 counts in
`small` and in `medium`, as it does in COCO's small and medium).

Public API:
    SizeBin(name, low, high, label)     low / high: sqrt(area) in px
    SIZE_BINS                            tiny, small, medium, large
    SizeBinMetrics(name, map50, map50_95, boxes)   one bin's scores (nan AP: no ground truth)
    bin_cell(entry, detail=False) -> str           "0.512 (34)" or "– (0)"; the stored dict form
    bin_cells(size_bins, detail=False) -> list[str]  one cell per bin of a stored `size_bins` dict
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MISSING", "SIZE_BINS", "SizeBin", "SizeBinMetrics", "bin_cell", "bin_cells"]

COCO_MAX_SIDE = 1e5  # the upper bound of COCO's "all" area range is 1e5 ** 2
MISSING = "–"  # what a score without ground truth is shown as (never 0)


@dataclass(frozen=True)
class SizeBin:
    """A range of box sizes, sqrt(area) from `low` to `high` px (both inclusive, as COCO's)."""

    name: str
    low: float
    high: float
    label: str  # how tables name the bin's range

    @property
    def area_range(self) -> list[float]:
        """The bin as a COCO area range (w * h)."""
        return [float(self.low) ** 2, float(self.high) ** 2]

    def contains(self, areas: np.ndarray) -> np.ndarray:
        """Which of `areas` (w * h) this bin scores: COCO's rule, both bounds inclusive."""
        low, high = self.area_range
        areas = np.asarray(areas, dtype=np.float64)
        return (areas >= low) & (areas <= high)

    @property
    def title(self) -> str:
        return f"{self.name} ({self.label})"


SIZE_BINS: tuple[SizeBin, ...] = (
    SizeBin("tiny", 0.0, 16.0, "< 16 px"),
    SizeBin("small", 16.0, 32.0, "16-32 px"),
    SizeBin("medium", 32.0, 96.0, "32-96 px"),
    SizeBin("large", 96.0, COCO_MAX_SIDE, "> 96 px"),
)


@dataclass(frozen=True)
class SizeBinMetrics:
    """One bin's AP (mean over the classes with ground truth in the bin; nan when none has)."""

    name: str
    map50: float
    map50_95: float
    boxes: int  # ground-truth boxes in the bin

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {"map50": num(self.map50), "map50_95": num(self.map50_95), "boxes": self.boxes}


def bin_cell(entry: dict[str, Any] | None, detail: bool = False) -> str:
    """One bin of a stored `size_bins` dict as a table cell: mAP50 (with `detail`, mAP50 / mAP50-95)
    and the number of ground-truth boxes in brackets; a bin without ground truth is a dash."""
    if not isinstance(entry, dict):
        return MISSING
    scores = [entry.get("map50"), entry.get("map50_95")] if detail else [entry.get("map50")]
    text = " / ".join(MISSING if not isinstance(v, (int, float)) or math.isnan(v) else f"{v:.3f}" for v in scores)
    boxes = entry.get("boxes")
    return text if boxes is None else f"{text} ({boxes})"


def bin_cells(size_bins: dict[str, Any] | None, detail: bool = False) -> list[str]:
    """A stored `size_bins` dict ({bin: {map50, map50_95, boxes}}) as one cell per bin, in `SIZE_BINS` order."""
    size_bins = size_bins if isinstance(size_bins, dict) else {}
    return [bin_cell(size_bins.get(b.name), detail) for b in SIZE_BINS]
