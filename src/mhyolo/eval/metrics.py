"""Detection metrics (COCO mAP plus YOLOv5-style P/R) and the classification report.

mAP comes from faster-coco-eval, so our numbers are the ones any COCO tool gives:
mAP@0.5 is AP at IoU 0.50, mAP@0.5:0.95 is AP averaged over IoU 0.50:0.05:0.95,
both with 101-point interpolated precision, up to 100 detections per image, all
box areas. Precision, recall and F1 are read at the one confidence threshold that
maximises the mean F1 over classes, with greedy matching at IoU >= 0.5
(see `mhyolo.eval.matching`).

Classes without any ground-truth box have nan metrics and are left out of every
mean, as COCO does; images without ground truth still count, so predictions on
them are false positives.

The same COCO run also scores each ball-size bin of `mhyolo.eval.size_bins` (sqrt of the
box area in original-image pixels) as one of its area ranges; a bin's mAP is the mean over
the classes with ground truth in it, nan when none has.

Public API:
    ImageResult(gt_boxes, gt_classes, pred_boxes, pred_scores, pred_classes,
                width, height, name="")            # one image, pixels, xyxy
    DetectionEvaluator(names, class_agnostic=False, agnostic_name="ball")
        .add(result: ImageResult) -> None
        .reset() -> None
        len(evaluator) -> number of images added
        .compute() -> DetectionMetrics
    DetectionMetrics: names, map50, map50_95, precision, recall, f1, conf_threshold,
        images, boxes, predictions, per_class: list[ClassMetrics],
        recall_grid (101,), pr_precision (K, 101) at IoU 0.5,
        size_bins: list[SizeBinMetrics] (one per `size_bins.SIZE_BINS`);
        .to_dict() -> dict (plain floats, for YAML/JSON), .table() -> str, .size_table() -> str
    ClassMetrics: name, ap50, ap50_95, precision, recall, f1, instances, predictions
    classification_report(y_true, y_pred, names) -> dict   (re-exported)
    confusion_matrix(y_true, y_pred, num_classes) -> np.ndarray   (re-exported)
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from mhyolo.errors import DataError
from mhyolo.eval.classification import classification_report, confusion_matrix
from mhyolo.eval.matching import best_f1_point, match_predictions
from mhyolo.eval.size_bins import MISSING, SIZE_BINS, SizeBinMetrics

__all__ = [
    "ClassMetrics",
    "DetectionEvaluator",
    "DetectionMetrics",
    "ImageResult",
    "classification_report",
    "confusion_matrix",
]

MAX_DETS = 100


@dataclass
class ImageResult:
    """One image's ground truth and predictions, in pixels, boxes as x1 y1 x2 y2.

    `name` (usually the image path) only serves error messages.
    """

    gt_boxes: np.ndarray  # (n, 4) float
    gt_classes: np.ndarray  # (n,) int
    pred_boxes: np.ndarray  # (m, 4) float
    pred_scores: np.ndarray  # (m,) float
    pred_classes: np.ndarray  # (m,) int
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        where = self.name or "image"
        self.gt_boxes = _boxes(self.gt_boxes, f"{where}: gt_boxes")
        self.pred_boxes = _boxes(self.pred_boxes, f"{where}: pred_boxes")
        self.gt_classes = _vector(self.gt_classes, len(self.gt_boxes), np.int64, f"{where}: gt_classes")
        self.pred_classes = _vector(self.pred_classes, len(self.pred_boxes), np.int64,
                                    f"{where}: pred_classes")
        self.pred_scores = _vector(self.pred_scores, len(self.pred_boxes), np.float64,
                                   f"{where}: pred_scores")
        if not np.all(np.isfinite(self.pred_scores)):
            raise DataError(f"{where}: non-finite prediction score")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise DataError(f"{where}: image size must be positive, got {self.width}x{self.height}")
        self.width, self.height = int(self.width), int(self.height)


def _boxes(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what}: expected shape (n, 4), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: non-finite coordinate")
    bad = np.flatnonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))
    if len(bad):
        raise DataError(f"{what}: box {bad[0]} is not x1 y1 x2 y2 with x2 >= x1, y2 >= y1: "
                        f"{arr[bad[0]].tolist()}")
    return arr


def _vector(values: np.ndarray, n: int, dtype: type, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        arr = arr.reshape(0)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{what}: expected shape ({n},), got {arr.shape}")
    if dtype is np.int64 and arr.size and not np.all(arr == np.round(arr)):
        raise DataError(f"{what}: class ids must be whole numbers")
    return arr.astype(dtype)


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    ap50: float
    ap50_95: float
    precision: float
    recall: float
    f1: float
    instances: int  # ground-truth boxes
    predictions: int


@dataclass(frozen=True)
class DetectionMetrics:
    names: list[str]
    map50: float
    map50_95: float
    precision: float  # mean over classes at conf_threshold
    recall: float
    f1: float  # the maximised mean F1
    conf_threshold: float | None  # None when there were no predictions
    images: int
    boxes: int  # ground-truth boxes
    predictions: int
    per_class: list[ClassMetrics]
    recall_grid: np.ndarray = field(repr=False)  # (101,) COCO recall thresholds
    pr_precision: np.ndarray = field(repr=False)  # (K, 101) interpolated precision at IoU 0.5
    size_bins: list[SizeBinMetrics] = field(default_factory=list)  # one per SIZE_BINS, in its order

    def to_dict(self) -> dict:
        """Plain Python numbers (nan becomes None) so the result can go to YAML or JSON."""
        def num(x: float | None) -> float | None:
            return None if x is None or math.isnan(x) else float(x)

        return {
            "map50": num(self.map50), "map50_95": num(self.map50_95),
            "precision": num(self.precision), "recall": num(self.recall), "f1": num(self.f1),
            "conf_threshold": num(self.conf_threshold),
            "images": self.images, "boxes": self.boxes, "predictions": self.predictions,
            "per_class": {
                c.name: {"ap50": num(c.ap50), "ap50_95": num(c.ap50_95), "precision": num(c.precision),
                         "recall": num(c.recall), "f1": num(c.f1), "instances": c.instances,
                         "predictions": c.predictions}
                for c in self.per_class
            },
            "size_bins": {b.name: b.to_dict() for b in self.size_bins},
        }

    def table(self) -> str:
        """A fixed-width text table: one 'all' row, then one row per class."""
        head = f"{'class':<16}{'images':>8}{'boxes':>8}{'P':>8}{'R':>8}{'mAP50':>8}{'mAP50-95':>10}"
        rows = [head, f"{'all':<16}{self.images:>8}{self.boxes:>8}{self.precision:>8.3f}"
                      f"{self.recall:>8.3f}{self.map50:>8.3f}{self.map50_95:>10.3f}"]
        for c in self.per_class:
            rows.append(f"{c.name:<16}{'':>8}{c.instances:>8}{c.precision:>8.3f}{c.recall:>8.3f}"
                        f"{c.ap50:>8.3f}{c.ap50_95:>10.3f}")
        return "\n".join(rows)

    def size_table(self) -> str:
        """A fixed-width text table, one row per ball-size bin; a bin without ground truth shows a dash."""
        def cell(x: float, width: int) -> str:
            return f"{MISSING:>{width}}" if math.isnan(x) else f"{x:>{width}.3f}"

        titles = {b.name: b.title for b in SIZE_BINS}
        rows = [f"{'ball size':<20}{'boxes':>8}{'mAP50':>8}{'mAP50-95':>10}"]
        rows += [f"{titles[b.name]:<20}{b.boxes:>8}{cell(b.map50, 8)}{cell(b.map50_95, 10)}" for b in self.size_bins]
        return "\n".join(rows)


class DetectionEvaluator:
    """Collects per-image results, then scores them all at once with `compute()`."""

    def __init__(self, names: list[str], class_agnostic: bool = False, agnostic_name: str = "ball"):
        if not names:
            raise ValueError("DetectionEvaluator needs at least one class name")
        self.names = list(names)
        self.class_agnostic = class_agnostic
        self.eval_names = [agnostic_name] if class_agnostic else self.names
        self._results: list[ImageResult] = []

    def __len__(self) -> int:
        return len(self._results)

    def reset(self) -> None:
        self._results.clear()

    def add(self, result: ImageResult) -> None:
        """Store one image; class ids are checked against `names` here, naming the image."""
        nc = len(self.names)
        for what, cls in (("ground-truth", result.gt_classes), ("predicted", result.pred_classes)):
            bad = cls[(cls < 0) | (cls >= nc)]
            if len(bad):
                raise DataError(f"{result.name or 'image'}: {what} class id {int(bad[0])} is outside "
                                f"0..{nc - 1} ({', '.join(self.names)})")
        if self.class_agnostic:
            result = ImageResult(result.gt_boxes, np.zeros_like(result.gt_classes), result.pred_boxes,
                                 result.pred_scores, np.zeros_like(result.pred_classes),
                                 result.width, result.height, result.name)
        self._results.append(result)

    def compute(self) -> DetectionMetrics:
        if not self._results:
            raise DataError("no images to evaluate: the dataset is empty")
        k = len(self.eval_names)
        instances = np.bincount(np.concatenate([r.gt_classes for r in self._results]), minlength=k)
        if instances.sum() == 0:
            raise DataError(f"no ground-truth boxes in the {len(self._results)} evaluated images: "
                            "mAP is undefined")
        pred_classes = np.concatenate([r.pred_classes for r in self._results])
        n_pred = np.bincount(pred_classes, minlength=k)

        precision, recall_grid, bin_precision = self._coco_precision()  # (T, R, K), (R,), per bin
        has_gt = instances > 0
        ap50 = np.where(has_gt, precision[0].mean(axis=0), np.nan)
        ap50_95 = np.where(has_gt, precision.mean(axis=(0, 1)), np.nan)
        pr_precision = np.where(has_gt[:, None], precision[0].T, np.nan)

        tp = np.concatenate([
            match_predictions(r.gt_boxes, r.gt_classes, r.pred_boxes, r.pred_scores, r.pred_classes)
            for r in self._results
        ])
        scores = np.concatenate([r.pred_scores for r in self._results])
        point = best_f1_point(scores, pred_classes, tp, instances)

        per_class = [
            ClassMetrics(name, float(ap50[i]), float(ap50_95[i]), float(point.precision[i]),
                         float(point.recall[i]), float(point.f1[i]), int(instances[i]), int(n_pred[i]))
            for i, name in enumerate(self.eval_names)
        ]
        return DetectionMetrics(
            names=list(self.eval_names),
            map50=float(np.nanmean(ap50)), map50_95=float(np.nanmean(ap50_95)),
            precision=float(np.nanmean(point.precision)), recall=float(np.nanmean(point.recall)),
            f1=point.mean_f1, conf_threshold=point.conf,
            images=len(self._results), boxes=int(instances.sum()), predictions=int(len(scores)),
            per_class=per_class, recall_grid=recall_grid, pr_precision=pr_precision,
            size_bins=self._size_bins(bin_precision),
        )

    def _size_bins(self, bin_precision: list[np.ndarray]) -> list[SizeBinMetrics]:
        """Each bin's AP from COCO's precision for its area range, over the classes with ground truth
        in the bin (counted by the bin's own rule, the one COCO applies)."""
        k = len(self.eval_names)
        classes = np.concatenate([r.gt_classes for r in self._results])
        boxes = np.concatenate([r.gt_boxes for r in self._results])
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        out = []
        for size_bin, precision in zip(SIZE_BINS, bin_precision):
            inside = size_bin.contains(areas)
            has_gt = np.bincount(classes[inside], minlength=k) > 0
            if not has_gt.any():
                out.append(SizeBinMetrics(size_bin.name, math.nan, math.nan, 0))
                continue
            ap50 = precision[0].mean(axis=0)[has_gt]
            ap50_95 = precision.mean(axis=(0, 1))[has_gt]
            out.append(SizeBinMetrics(size_bin.name, float(ap50.mean()), float(ap50_95.mean()), int(inside.sum())))
        return out

    def _coco_dicts(self) -> tuple[dict, list[dict]]:
        """Ground truth as a COCO dataset dict and predictions as a COCO results list (ids from 1)."""
        images, annotations, detections = [], [], []
        for image_id, r in enumerate(self._results, start=1):
            images.append({"id": image_id, "width": r.width, "height": r.height})
            for (x1, y1, x2, y2), c in zip(r.gt_boxes.tolist(), r.gt_classes.tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            for (x1, y1, x2, y2), s, c in zip(r.pred_boxes.tolist(), r.pred_scores.tolist(),
                                              r.pred_classes.tolist()):
                detections.append({"image_id": image_id, "category_id": c + 1,
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.eval_names)]
        return {"images": images, "annotations": annotations, "categories": categories}, detections

    def _coco_precision(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """COCO's interpolated precision, shape (IoU thresholds, recall thresholds, classes), for all
        boxes and for each size bin (COCO's own area ranges: "all", then one per bin)."""
        gt, detections = self._coco_dicts()

        def quiet(*_args: object, **_kwargs: object) -> None:
            return None

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(gt, print_function=quiet)
            coco_dt = coco_gt.loadRes(detections)
            coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
            params = coco_eval.params
            everything = params.areaRng[params.areaRngLbl.index("all")]
            params.areaRng = [everything, *(b.area_range for b in SIZE_BINS)]
            params.areaRngLbl = ["all", *(b.name for b in SIZE_BINS)]
            coco_eval.evaluate()
            coco_eval.accumulate()
        params = coco_eval.params
        if not np.isclose(params.iouThrs[0], 0.5):
            raise RuntimeError(f"unexpected COCO IoU thresholds {params.iouThrs}")
        area = params.areaRngLbl.index("all")
        max_det = list(params.maxDets).index(MAX_DETS)
        every = np.asarray(coco_eval.eval["precision"])
        precision = every[:, :, :, area, max_det]
        bins = [every[:, :, :, params.areaRngLbl.index(b.name), max_det] for b in SIZE_BINS]
        return precision, np.asarray(params.recThrs, dtype=np.float64), bins
