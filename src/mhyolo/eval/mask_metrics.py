"""Mask mAP: COCO's segmentation AP (mask IoU, 101-point interpolation, up to 100 detections per
image) from faster-coco-eval's `segm` mode, so the figures are those any COCO tool gives.

Masks are boolean (height, width) arrays in the original image's pixels, encoded as COCO run-length
encodings here; an image's ground truth and predictions are one `MaskImageResult`. As for boxes,
classes without ground truth are left out of the mean and images without ground truth still count.

Public API:
    MaskImageResult(gt_masks, gt_classes, pred_masks, pred_scores, pred_classes, name="")
    MaskEvaluator(names).add(result); .compute() -> MaskMetrics(map50, map50_95, per_class)
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as coco_mask

from mhyolo.errors import DataError
from mhyolo.eval.metrics import MAX_DETS


def full_mask(mask: Any) -> np.ndarray:
    """A boolean (height, width) array of a mask given as one, or as a crop that knows its place
    (`infer.masks.BoxMask`, whose `full()` gives it)."""
    full = getattr(mask, "full", None)
    return np.asarray(full() if full is not None else mask, bool)


@dataclass
class MaskImageResult:
    """One image's true and predicted masks, with classes and scores. Masks are (H, W) booleans, stacked
    (n, H, W) or listed, or crops that know their place (`full()`); each is expanded only to be encoded."""

    gt_masks: Sequence[Any]
    gt_classes: np.ndarray
    pred_masks: Sequence[Any]
    pred_scores: np.ndarray
    pred_classes: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        where = self.name or "image"
        shapes = {tuple(getattr(m, "image_shape", None) or np.shape(m)) for masks in (self.gt_masks, self.pred_masks)
                  for m in masks}
        if any(len(s) != 2 for s in shapes):
            raise ValueError(f"{where}: every mask must be (height, width), got {sorted(shapes)}")
        if len(shapes) > 1:
            raise DataError(f"{where}: masks of different image sizes {sorted(shapes)}")
        self._shape = shapes.pop() if shapes else (0, 0)
        self.gt_classes = np.asarray(self.gt_classes, np.int64).reshape(-1)
        self.pred_classes = np.asarray(self.pred_classes, np.int64).reshape(-1)
        self.pred_scores = np.asarray(self.pred_scores, np.float64).reshape(-1)
        if len(self.gt_classes) != len(self.gt_masks):
            raise ValueError(f"{where}: {len(self.gt_masks)} true masks but {len(self.gt_classes)} classes")
        if not len(self.pred_masks) == len(self.pred_scores) == len(self.pred_classes):
            raise ValueError(f"{where}: predicted masks, scores and classes differ in number")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._shape[0]), int(self._shape[1])


@dataclass(frozen=True)
class MaskMetrics:
    names: list[str]
    map50: float
    map50_95: float
    per_class_ap50: list[float]  # nan for a class without ground truth
    per_class_ap50_95: list[float]
    images: int
    masks: int  # ground-truth masks


def _rle(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))


class MaskEvaluator:
    """Collects `MaskImageResult`s and scores them as COCO does (`iouType="segm"`). Masks are kept as
    run-length encodings from `add` on (a few hundred bytes where a 640x640 mask holds 400 kB)."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._images: list[tuple[tuple[int, int], list[tuple[dict, int]], list[tuple[dict, float, int]]]] = []

    def add(self, result: MaskImageResult) -> None:
        k = len(self.names)
        for what, classes in (("gt", result.gt_classes), ("predicted", result.pred_classes)):
            if classes.size and (classes.min() < 0 or classes.max() >= k):
                raise DataError(f"{result.name or 'image'}: {what} class id out of range (nc={k})")
        truth = [(_rle(full_mask(mask)), int(c)) for mask, c in zip(result.gt_masks, result.gt_classes.tolist())]
        said = [(_rle(full_mask(mask)), float(s), int(c)) for mask, s, c in
                zip(result.pred_masks, result.pred_scores.tolist(), result.pred_classes.tolist())]
        self._images.append((result.shape, truth, said))

    def reset(self) -> None:
        self._images = []

    def __len__(self) -> int:
        return len(self._images)

    def _coco(self) -> tuple[dict, list[dict]]:
        images, annotations, detections = [], [], []
        for image_id, ((height, width), truth, said) in enumerate(self._images, start=1):
            images.append({"id": image_id, "width": width, "height": height})
            for rle, c in truth:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                    "segmentation": rle, "area": float(coco_mask.area(rle)),
                                    "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0})
            for rle, score, c in said:
                detections.append({"image_id": image_id, "category_id": c + 1, "segmentation": rle, "score": score})
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.names)]
        return {"images": images, "annotations": annotations, "categories": categories}, detections

    def compute(self) -> MaskMetrics:
        gt, detections = self._coco()
        k = len(self.names)
        if not gt["annotations"]:
            nan = [math.nan] * k
            return MaskMetrics(self.names, math.nan, math.nan, nan, nan, len(self._images), 0)

        def quiet(*_args: object, **_kwargs: object) -> None:
            return None

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(gt, print_function=quiet)
            coco_dt = coco_gt.loadRes(detections) if detections else None
            if coco_dt is None:
                per = [0.0 if np.any(self._gt_classes() == c) else math.nan for c in range(k)]
                return MaskMetrics(self.names, 0.0, 0.0, per, per, len(self._images), len(gt["annotations"]))
            coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="segm", print_function=quiet)
            coco_eval.evaluate()
            coco_eval.accumulate()
        params = coco_eval.params
        area = params.areaRngLbl.index("all")
        max_det = list(params.maxDets).index(MAX_DETS)
        precision = np.asarray(coco_eval.eval["precision"])[:, :, :, area, max_det]  # (iou, recall, class)
        has_gt = np.bincount(self._gt_classes(), minlength=k) > 0
        ap50 = np.where(has_gt, precision[0].mean(axis=0), math.nan)
        ap50_95 = np.where(has_gt, precision.mean(axis=(0, 1)), math.nan)
        return MaskMetrics(self.names, float(np.nanmean(ap50)), float(np.nanmean(ap50_95)), ap50.tolist(),
                           ap50_95.tolist(), len(self._images), len(gt["annotations"]))

    def _gt_classes(self) -> np.ndarray:
        return np.array([c for _, truth, _ in self._images for _, c in truth], np.int64)
