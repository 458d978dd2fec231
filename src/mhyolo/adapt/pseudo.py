"""The pseudo-labels as a plain YOLO dataset a person can open, correct and give back.

    pseudo/
      images/NAME        links to the target images (copies where links cannot be made)
      labels/NAME.txt    the kept boxes: `class cx cy w h`, class = the type the model said
      ignore/NAME.txt    ignore regions, same format (read by training with `ignore_regions: true`)
      scores/NAME.txt    the kept boxes again with the teacher's score as a sixth column
      classes.txt        one class name a line (what Label Studio's and labelImg's YOLO import read)
      data.yaml          `train: images`, the names, `ignore_regions: true`

`labels/` holds nothing else, so `mhyolo data verify` and any YOLO reader see a clean dataset.
Every target image is in it, also those with no kept box (an empty label file): they are where a
reviewer finds the balls the teacher missed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from mhyolo.adapt.select import Selection
from mhyolo.data.labels import write_labels
from mhyolo.errors import DataError

MIN_SIDE = 1e-6  # a box narrower than this (normalised) after clipping is not written


@dataclass
class PseudoSummary:
    images: int = 0
    kept: int = 0  # pseudo-label boxes
    ignored: int = 0  # ignore regions
    lonely: int = 0  # of those, confident boxes the temporal filter moved there
    negatives: int = 0  # images without a pseudo-label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalised(boxes: np.ndarray, labels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) pixel xyxy + classes -> (m, 5) YOLO rows clipped to the image, empty boxes left out,
    and which of the n boxes those are."""
    height, width = shape
    xyxy = np.asarray(boxes, np.float64).reshape(-1, 4) / np.array([width, height, width, height])
    xyxy = np.clip(xyxy, 0.0, 1.0)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    rows = np.concatenate([np.asarray(labels, np.float64).reshape(-1, 1), (xyxy[:, :2] + xyxy[:, 2:]) / 2, wh], axis=1)
    valid = (wh > MIN_SIDE).all(axis=1)
    return rows[valid], valid


def link_or_copy(source: Path, target: Path) -> None:
    """`target` a link to `source`, or a copy where the file system makes no links."""
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # a file system without links
        shutil.copy2(source, target)


def write_dataset(folder: Path, selections: Sequence[Selection], names: list[str],
                  progress: bool = True) -> PseudoSummary:
    """Write `folder` from scratch (a half-written one from an interrupted run is replaced)."""
    if folder.exists():
        shutil.rmtree(folder)
    for sub in ("images", "labels", "ignore", "scores"):
        (folder / sub).mkdir(parents=True)
    summary = PseudoSummary()
    seen: dict[str, str] = {}
    for selection in tqdm(selections, desc="pseudo-labels", unit="img", disable=not progress, leave=False):
        item = selection.item
        source = Path(item.path)
        stem = source.stem
        if stem in seen:
            raise DataError(f"{item.path} and {seen[stem]} would share the label file {stem}.txt: rename one")
        seen[stem] = item.path
        link_or_copy(source, folder / "images" / source.name)
        kept, valid = _normalised(item.boxes[selection.keep], item.labels[selection.keep], item.shape)
        scores = item.scores[selection.keep][valid]
        write_labels(folder / "labels" / f"{stem}.txt", kept)
        ignored, _ = _normalised(item.boxes[selection.ignore], item.labels[selection.ignore], item.shape)
        if len(ignored):
            write_labels(folder / "ignore" / f"{stem}.txt", ignored)
        lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f} {s:.5f}" for (c, x, y, w, h), s in zip(kept, scores)]
        (folder / "scores" / f"{stem}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        summary.images += 1
        summary.kept += len(kept)
        summary.ignored += len(ignored)
        summary.lonely += int(selection.lonely.sum())
        summary.negatives += int(len(kept) == 0)
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    spec = {"path": ".", "train": "images", "nc": len(names), "names": list(names), "ignore_regions": True}
    (folder / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return summary
