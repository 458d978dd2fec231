"""What a label file's reader reports: a problem named by file and line (boxes and polygons alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Tolerance for coordinates that exporters write as 1.0000001 or -1e-7.
COORD_EPS = 1e-6


@dataclass(frozen=True)
class LabelIssue:
    path: Path
    line: int  # 1-based; 0 for a problem with the whole file
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"
