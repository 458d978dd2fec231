"""Sliced inference for small objects: overlapping tiles of a large image plus the whole image.

A 10-pixel tennis ball in a 1280x720 broadcast frame is 2-3 pixels once the frame is
letterboxed to 320: nothing is left to find. Cutting the frame into tiles of `size`
pixels (each letterboxed to the model's input on its own) shows the ball at its native
size or larger; the whole image is run too, so balls larger than a tile are still found.
A box that touches an inner edge of its tile (an edge that is not the image's) is a ball
cut by the tile (`data.windows`, the rule slice-aided training labels its windows by): it is dropped, since the overlap shows that ball whole in the neighbouring
tile (or the whole-image pass does, for balls larger than the overlap). The rest are
shifted back into the image and merged per class by NMS (the predictor's, `postprocess.nms`) at the predictor's
IoU threshold. `merge="nmm"` is SAHI's greedy merge instead: the best box absorbs every box
of its class that lies mostly inside or around it (intersection over the smaller box >=
`match`) and grows to their union; it suits a high score threshold only, since at a
validation threshold (0.001) large low-score boxes swallow the small balls.

The tiling is ours rather than SAHI's: SAHI needs the `opencv-python` GUI build (which
clashes with the headless OpenCV installed here) plus shapely, and its merge works on its
own prediction objects; our Predictor already returns boxes with their types, so the step
that remains is this grid and one NMS. It works with any backend the Predictor takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mhyolo.data.windows import cut_by_window
from mhyolo.errors import ConfigError
from mhyolo.infer.postprocess import nms
from mhyolo.infer.predictor import Prediction, Predictor, model_stride

MAX_OVERLAP = 0.9
DEFAULT_OVERLAP = 0.2
MERGES = ("nms", "nmm")


@dataclass(frozen=True)
class SliceSettings:
    size: int  # tile side in original-image pixels
    overlap: float = DEFAULT_OVERLAP  # share of a tile shared with its neighbour, in [0, 0.9)
    whole_image: bool = True  # also run the whole image (large objects)
    merge: str = "nms"  # "nms": NMS at the IoU threshold; "nmm": greedy merge by intersection over the smaller box
    match: float = 0.5  # intersection over the smaller box at which two boxes are one object (nmm)

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < MAX_OVERLAP:
            raise ConfigError(f"--slice-overlap {self.overlap}: must be in [0, {MAX_OVERLAP})")
        if self.merge not in MERGES:
            raise ConfigError(f"slice merge must be one of {', '.join(MERGES)}, got {self.merge!r}")

    def check(self, stride: int) -> None:
        """What needs the model: a tile at least one stride wide."""
        if self.size < stride:
            raise ConfigError(f"--slice {self.size}: a tile must be at least the model stride ({stride} px)")


def tile_windows(height: int, width: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) windows of `size` covering the image, neighbours sharing `overlap` of a
    tile; the last window of a row or column is moved back to end at the image edge."""
    step = max(1, int(round(size * (1.0 - overlap))))

    def starts(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        count = math.ceil((extent - size) / step) + 1
        return sorted({min(i * step, extent - size) for i in range(count)})

    return [(x, y, min(x + size, width), min(y + size, height)) for y in starts(height) for x in starts(width)]


def place_tile(prediction: Prediction, window: tuple[int, int, int, int], shape: tuple[int, int]) -> Prediction:
    """A tile's boxes in image pixels, without those cut by an inner edge of the tile (the rule
    training windows follow too: `data.windows.cut_by_window`)."""
    x0, y0 = window[:2]
    kept = prediction.subset(~cut_by_window(prediction.boxes, window, shape))
    return replace(kept, boxes=kept.boxes + np.array([x0, y0, x0, y0], np.float32), image_shape=shape)


def greedy_merge(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, match: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the boxes kept (best first) and their boxes grown to the union of every box of
    the same group each absorbed (intersection over the smaller box >= `match`)."""
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(len(boxes), bool)
    kept, merged = [], []
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    ix = np.clip(np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0]),
                 0, None)
    iy = np.clip(np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1]),
                 0, None)
    matches = (ix * iy / np.maximum(np.minimum(areas[:, None], areas[None, :]), 1e-9) >= match)
    matches &= groups[:, None] == groups[None, :]
    for i in order:
        if not alive[i]:
            continue
        alive[i] = False
        box = boxes[i].copy()
        absorbed = np.nonzero(alive & matches[i])[0]
        if len(absorbed):
                alive[absorbed] = False
                box[:2] = np.minimum(box[:2], boxes[absorbed, :2].min(axis=0))
                box[2:] = np.maximum(box[2:], boxes[absorbed, 2:].max(axis=0))
        kept.append(i)
        merged.append(box)
    return np.asarray(kept, np.int64), np.asarray(merged, np.float32).reshape(-1, 4)


def merge_predictions(parts: Sequence[Prediction], shape: tuple[int, int], iou: float, max_det: int,
                      agnostic: bool = False, merge: str = "nmm", match: float = 0.5) -> Prediction:
    """Concatenate predictions of one image (already in its pixels) and keep one box per object."""
    pool = Prediction.concatenate(parts, shape)
    boxes, scores, classes = pool.boxes, pool.scores, pool.class_ids
    groups = np.zeros(len(classes), np.int64) if agnostic else classes
    if not len(boxes):
        keep, kept_boxes = np.zeros(0, np.int64), boxes
    elif merge == "nmm":
        keep, kept_boxes = greedy_merge(boxes, scores, groups, match)
        keep, kept_boxes = keep[:max_det], kept_boxes[:max_det]
    else:
        keep = nms(boxes, scores, iou, groups)[:max_det]
        kept_boxes = boxes[keep]
    merged = pool.subset(keep)  # every per-box field of the kept boxes
    merged.boxes = kept_boxes  # greedy merging enlarges a kept box to cover the boxes merged into it
    return merged


class SlicedPredictor:
    """A `Predictor` run on tiles (and the whole image), merged into one `Prediction` per image."""

    def __init__(self, predictor: Predictor, settings: SliceSettings) -> None:
        if getattr(predictor, "native", None) is not None:
            raise ConfigError("--imgsz native and --slice do not combine: tiles are run at one input size")
        settings.check(model_stride(predictor.model))
        self.predictor = predictor
        self.settings = settings

    def tiles(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        height, width = image.shape[:2]
        if self.settings.size > max(height, width):
            raise ConfigError(f"--slice {self.settings.size}: larger than the image ({width}x{height}); "
                              "use a smaller tile or no --slice")
        return tile_windows(height, width, self.settings.size, self.settings.overlap)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        results = []
        for image in images:
            shape = image.shape[:2]
            windows = self.tiles(image)
            crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows]
            parts = [place_tile(p, window, shape) for p, window in zip(self.predictor.predict(crops), windows)]
            if self.settings.whole_image:
                parts += self.predictor.predict([image])
            results.append(merge_predictions(parts, shape, self.predictor.iou, self.predictor.max_det,
                                             self.predictor.agnostic, self.settings.merge, self.settings.match))
        return results

    def calls_per_image(self, image: np.ndarray) -> int:
        """Model calls one image costs (tiles + the whole image): the latency factor of slicing."""
        return len(self.tiles(image)) + int(self.settings.whole_image)
