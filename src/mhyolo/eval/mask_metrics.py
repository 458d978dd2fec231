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
from dataclasses import dataclass

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as coco_mask

from mhyolo.errors import DataError
from mhyolo.eval.metrics import MAX_DETS


@dataclass
class MaskImageResult:
    """One image's true and predicted masks, (n, H, W) booleans, with classes and scores."""

    gt_masks: np.ndarray
    gt_classes: np.ndarray
    pred_masks: np.ndarray
    pred_scores: np.ndarray
    pred_classes: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        where = self.name or "image"
        self.gt_masks = np.asarray(self.gt_masks, bool)
        self.pred_masks = np.asarray(self.pred_masks, bool)
        for what, masks in (("gt_masks", self.gt_masks), ("pred_masks", self.pred_masks)):
            if masks.ndim != 3:
                raise ValueError(f"{where}: {what} must be (n, height, width), got {masks.shape}")
        if self.gt_masks.shape[1:] != self.pred_masks.shape[1:]:
            raise DataError(f"{where}: true masks are {self.gt_masks.shape[1:]} but predicted ones "
                            f"{self.pred_masks.shape[1:]}")
        self.gt_classes = np.asarray(self.gt_classes, np.int64).reshape(-1)
        self.pred_classes = np.asarray(self.pred_classes, np.int64).reshape(-1)
        self.pred_scores = np.asarray(self.pred_scores, np.float64).reshape(-1)
        if len(self.gt_classes) != len(self.gt_masks):
            raise ValueError(f"{where}: {len(self.gt_masks)} true masks but {len(self.gt_classes)} classes")
        if not len(self.pred_masks) == len(self.pred_scores) == len(self.pred_classes):
            raise ValueError(f"{where}: predicted masks, scores and classes differ in number")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.gt_masks.shape[1]), int(self.gt_masks.shape[2])


@dataclass(frozen=True)
class MaskMetrics:
    names: list[str]
    map50: float
    map50_95: float
    per_class_ap50: list[float]  # nan for a class without ground truth
    per_class_ap50_95: list[float]
    images: int
    masks: int  # ground-truth masks

    def to_dict(self) -> dict:
        return {"mask_map50": self.map50, "mask_map50_95": self.map50_95, "images": self.images, "masks": self.masks,
                "per_class": {n: {"ap50": a, "ap50_95": b} for n, a, b in
                              zip(self.names, self.per_class_ap50, self.per_class_ap50_95)}}


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
        truth = [(_rle(mask), int(c)) for mask, c in zip(result.gt_masks, result.gt_classes.tolist())]
        said = [(_rle(mask), float(s), int(c)) for mask, s, c in
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
