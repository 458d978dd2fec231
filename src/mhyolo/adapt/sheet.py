"""A contact sheet for a person to judge the pseudo-labels at a glance: the highest- and the
lowest-scoring kept boxes, cut out as the crop classifier cuts them (`infer.crops`: a square
with some context), in a grid, each with its box drawn and its score. The lowest kept ones show what the keep
threshold lets through; the highest ones what the teacher is surest of.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mhyolo.adapt.select import Selection
from mhyolo.infer.crops import crop_boxes, square_windows
from mhyolo.errors import MhyoloError
from mhyolo.infer.sources import read_image

CROP = 96  # pixels per crop
COLUMNS = 8
TITLE = 28  # pixels of a section's title bar
BACKGROUND = 255
BOX_COLOUR = (0, 220, 0)  # BGR: the kept box drawn on its crop


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    """Black on a white outline: readable on any crop."""
    for colour, thickness in (((255, 255, 255), 3), ((0, 0, 0), 1)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def _grid(crops: list[np.ndarray], scores: list[float], title: str) -> np.ndarray:
    rows = max(1, -(-len(crops) // COLUMNS))
    canvas = np.full((TITLE + rows * CROP, COLUMNS * CROP, 3), BACKGROUND, np.uint8)
    _text(canvas, title, (6, TITLE - 9), 0.55)
    if not crops:
        _text(canvas, "none", (6, TITLE + CROP // 2))
    for i, (crop, score) in enumerate(zip(crops, scores)):
        y, x = TITLE + (i // COLUMNS) * CROP, (i % COLUMNS) * CROP
        canvas[y:y + CROP, x:x + CROP] = crop
        cv2.rectangle(canvas, (x, y), (x + CROP - 1, y + CROP - 1), (BACKGROUND,) * 3, 1)
        _text(canvas, f"{score:.2f}", (x + 4, y + CROP - 6))
    return canvas


def contact_sheet(selections: Sequence[Selection], path: Path, count: int = 16) -> Path:
    """Write the sheet of the `count` highest- and `count` lowest-scoring kept boxes (no box in both)."""
    boxes = [(s.item.scores[i], s.item.path, s.item.boxes[i]) for s in selections for i in np.flatnonzero(s.keep)]
    boxes.sort(key=lambda b: -float(b[0]))
    top_n = min(count, (len(boxes) + 1) // 2)
    top, bottom = boxes[:top_n], boxes[top_n:][-count:]
    images: dict[str, np.ndarray | None] = {}

    def crops(chosen: list[tuple[float, str, np.ndarray]]) -> list[np.ndarray]:
        out = []
        for _, image_path, box in chosen:
            if image_path not in images:
                images[image_path] = read_image(Path(image_path))[0]
            image = images[image_path]
            if image is None:
                out.append(np.full((CROP, CROP, 3), 114, np.uint8))
                continue
            crop = crop_boxes(image, box[None], CROP)[0]
            window = np.round(square_windows(box[None])[0])  # where the crop was cut, to draw the box on it
            scale = CROP / max(window[2] - window[0], 1.0)
            x0, y0, x1, y1 = ((box - window[[0, 1, 0, 1]]) * scale).round().astype(int).tolist()
            cv2.rectangle(crop, (x0, y0), (x1, y1), BOX_COLOUR, 1)
            out.append(crop)
        return out

    sheet = np.concatenate([_grid(crops(top), [float(b[0]) for b in top], f"highest-scoring kept boxes ({len(top)})"),
                            _grid(crops(bottom), [float(b[0]) for b in bottom],
                                  f"lowest-scoring kept boxes ({len(bottom)} of {len(boxes)})")])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise MhyoloError(f"{path}: cannot write the contact sheet")
    return path
