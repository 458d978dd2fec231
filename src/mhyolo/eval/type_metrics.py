"""Metrics for the multi-head model: a one-class "ball" detector plus a ball-type head.

Detection alone (`DetectionEvaluator` with `class_agnostic=True`) says whether the balls
were found; these metrics say whether their *types* were right, three ways:

* per object (`cls_accuracy`): ground-truth boxes are matched one-to-one to detections
  with score >= `conf`, greedily in descending detection score, class-agnostically, at
  IoU >= `iou`; accuracy is the share of matched boxes whose predicted type equals the
  true type. Unmatched boxes are the detector's misses and are reported separately as
  `detection_recall` = matched / gt_boxes, so the two failures are not mixed up. The
  per-type precision/recall/F1/support and the confusion matrix (rows = truth) are over
  the matched boxes too.
* per image (`image_accuracy`, the metric of the seed design, whose head gives one type
  per image): the true type of an image is that of its largest ground-truth box (first
  one on equal areas); the predicted type is the image head's when the result carries
  one, else the type of the highest-scoring detection with score >= `conf`. Images
  without ground truth are skipped; images without any prediction count as wrong (they
  lower recall in `image_per_type` and are counted in `images_without_prediction`, but
  have no column in the square image confusion matrix).
* jointly (`typed_map50`, `typed_map50_95`): COCO mAP with the types as classes, from
  `DetectionEvaluator(type_names)`, over *all* detections (no `conf` cut, as mAP needs
  the whole ranking). Each detection's class is its predicted type and its score is the
  detection score times its type probability when `type_scores` are given. That is
  what a three-class YOLOv5 ranks by (objectness x class probability), so the numbers
  are comparable with a plain nc=3 detector; a confidently detected ball of an
  uncertain type then ranks below one whose type the head is sure of.

Which boxes need a type. The per-object and per-image figures read only detections with
score >= `conf` (0.25). Typed mAP reads every detection: a box of detection score s joins its
type's ranking at s x p, p its type's probability (1/K <= p <= 1), so it can change that type's
AP unless it ranks below its last true positive (a false positive there lowers no interpolated
precision; a true positive adds recall). Not knowing the box's type, only a box with no ground truth within IoU 0.5 (never a
true positive) that scores below every type's lowest possible true positive is certainly
irrelevant, and that floor is known only after typing every box near a ground truth, in a second
pass over the images. On real data it leaves nothing: the lowest true positives are balls found
only near the validation floor (0 of 2,322 boxes on 40 val images of the seed fold, with a
trained classifier: `benchmarks/two_stage.py --parts val-time`).
COCO's cap of 100 detections per image and type proves nothing either: with K types a box is
beyond it only if 100 boxes of each type outrank it, 100 K others (300 for three types, more
than the 299 others `max_det` 300 leaves). So an exact typed mAP types every box. A box may be
left `UNTYPED` (-1, type score 0) only by choice (`validate`'s `type_min_score`): it must score
below `conf` (else `compute` refuses), so every figure but the typed mAP is unchanged, and it is
left out of the typed mAP, which is then the typed mAP of the boxes scoring at least the chosen
floor (`TypeMetrics.untyped` counts them).

Public API:
    TypedImageResult(gt_boxes, gt_types, pred_boxes, pred_scores, pred_types, width, height,
                     name="", type_scores=None, image_type=None)   # one image, pixels, xyxy
    match_pairs(gt_boxes, pred_boxes, pred_scores, iou_threshold=0.5) -> (gt_index, pred_index)
    largest_box_type(gt_boxes, gt_types) -> int
    TypeEvaluator(type_names, iou=0.5, conf=0.25)
        .add(result: TypedImageResult) -> None
        .reset() -> None
        len(evaluator) -> images added
        .compute() -> TypeMetrics
    TypeMetrics: type_names, iou, conf, cls_accuracy, matched, gt_boxes, detection_recall,
        image_accuracy, images, images_without_prediction, typed_map50, typed_map50_95,
        per_type, macro, confusion_matrix (K, K), image_per_type, image_confusion_matrix (K, K),
        typed: DetectionMetrics, untyped (boxes left out of the typed mAP)
        .to_dict() -> dict (plain numbers, nan -> None), .table() -> str,
        .write_plots(out_dir) -> list[Path]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from mhyolo.defaults import PREDICT_CONF
from mhyolo.errors import DataError
from mhyolo.eval.classification import classification_report
from mhyolo.eval.metrics import DetectionEvaluator, DetectionMetrics, ImageResult
from mhyolo.infer.types import UNTYPED

__all__ = [
    "TypeEvaluator",
    "TypeMetrics",
    "TypedImageResult",
    "largest_box_type",
    "match_pairs",
]

PLOT_NAMES = {
    "objects": "type_confusion_matrix.png",
    "images": "image_type_confusion_matrix.png",
    "pr": "typed_pr_curve.png",
}


@dataclass
class TypedImageResult:
    """One image: ground-truth boxes with their types, detections with their predicted types.

    Boxes are x1 y1 x2 y2 in the original image's pixels. `type_scores` is the probability
    of each detection's predicted type; `image_type` is set only by a model whose head
    gives one type per image. `name` (usually the image path) only serves error messages.
    A predicted type `UNTYPED` (-1) marks a detection that was not typed (see the module's
    *Which boxes need a type*).
    """

    gt_boxes: np.ndarray  # (n, 4) float
    gt_types: np.ndarray  # (n,) int
    pred_boxes: np.ndarray  # (m, 4) float
    pred_scores: np.ndarray  # (m,) float, detection confidence
    pred_types: np.ndarray  # (m,) int
    width: int
    height: int
    name: str = ""
    type_scores: np.ndarray | None = None  # (m,) float in [0, 1]
    image_type: int | None = None

    def __post_init__(self) -> None:
        # ImageResult already checks shapes, box order, finiteness and the image size.
        checked = ImageResult(self.gt_boxes, self.gt_types, self.pred_boxes, self.pred_scores,
                              self.pred_types, self.width, self.height, self.name)
        self.gt_boxes, self.gt_types = checked.gt_boxes, checked.gt_classes
        self.pred_boxes, self.pred_scores = checked.pred_boxes, checked.pred_scores
        self.pred_types = checked.pred_classes
        self.width, self.height = checked.width, checked.height
        where = self.name or "image"
        if self.type_scores is not None:
            ts = np.asarray(self.type_scores, dtype=np.float64).reshape(-1)
            if len(ts) != len(self.pred_boxes):
                raise ValueError(f"{where}: type_scores: expected shape ({len(self.pred_boxes)},), "
                                 f"got {np.shape(self.type_scores)}")
            if len(ts) and not (np.all(np.isfinite(ts)) and ts.min() >= 0.0 and ts.max() <= 1.0):
                raise DataError(f"{where}: type_scores must be probabilities in [0, 1], "
                                f"got min {ts.min()} max {ts.max()}")
            self.type_scores = ts
        if self.image_type is not None:
            value = self.image_type
            if isinstance(value, (bool, np.bool_)) or float(value) != round(float(value)):
                raise DataError(f"{where}: image_type must be a whole type id, got {value!r}")
            self.image_type = int(value)

    @property
    def typed_scores(self) -> np.ndarray:
        """The ranking score for typed mAP: detection score x type probability (when known)."""
        if self.type_scores is None:
            return self.pred_scores
        return self.pred_scores * self.type_scores


def match_pairs(gt_boxes: np.ndarray, pred_boxes: np.ndarray, pred_scores: np.ndarray,
                iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Class-agnostic one-to-one matching of one image; returns matched (gt index, pred index).

    Same rule as `mhyolo.eval.matching.match_predictions`, but it keeps *which* ground
    truth each detection took, since the type check needs the pair: in descending score
    (stable on ties), a detection takes the still-free ground-truth box of highest IoU if
    that IoU reaches `iou_threshold`.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return empty, empty.copy()
    iou = box_iou(torch.as_tensor(pred_boxes, dtype=torch.float64),
                  torch.as_tensor(gt_boxes, dtype=torch.float64)).numpy()
    iou = np.nan_to_num(iou, nan=0.0)  # zero-area boxes: 0/0
    taken = np.zeros(len(gt_boxes), dtype=bool)
    gt_index, pred_index = [], []
    for i in np.argsort(-np.asarray(pred_scores), kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            taken[j] = True
            gt_index.append(j)
            pred_index.append(int(i))
    return np.array(gt_index, dtype=np.int64), np.array(pred_index, dtype=np.int64)


def largest_box_type(gt_boxes: np.ndarray, gt_types: np.ndarray) -> int:
    """The image's type under the one-type-per-image rule: the type of its largest box."""
    boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("largest_box_type: the image has no ground-truth box")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.asarray(gt_types)[int(area.argmax())])  # argmax: first on ties


def _per_type(report: dict | None, names: Sequence[str], support: np.ndarray | None) -> dict:
    """The report's per-class dict, or nan scores with the given support when there was no sample."""
    if report is not None:
        return {n: dict(report["per_class"][n]) for n in names}
    return {n: {"precision": math.nan, "recall": math.nan, "f1": math.nan, "support": int(support[i])}
            for i, n in enumerate(names)}


@dataclass(frozen=True)
class TypeMetrics:
    type_names: list[str]
    iou: float
    conf: float
    cls_accuracy: float  # over matched ground-truth boxes; nan when none matched
    matched: int
    gt_boxes: int
    detection_recall: float  # matched / gt_boxes
    image_accuracy: float  # nan when no image has ground truth
    images: int  # images with ground truth
    images_without_prediction: int
    typed_map50: float
    typed_map50_95: float
    per_type: dict  # name -> precision, recall, f1, support (matched boxes)
    macro: dict  # precision, recall, f1 over types present among matched boxes
    confusion_matrix: np.ndarray = field(repr=False)  # (K, K), rows = truth, matched boxes
    image_per_type: dict = field(default_factory=dict)  # name -> precision, recall, f1, support
    image_confusion_matrix: np.ndarray = field(default=None, repr=False)  # (K, K) images with a prediction
    typed: DetectionMetrics | None = field(default=None, repr=False)  # full typed mAP result
    untyped: int = 0  # detections left untyped (all below `conf`), not in the typed mAP

    def to_dict(self) -> dict:
        """Plain Python numbers and lists (nan becomes None) for YAML or JSON."""
        def num(x: float) -> float | None:
            return None if x is None or math.isnan(x) else float(x)

        def scores(table: dict) -> dict:
            return {name: {k: (int(v) if k == "support" else num(v)) for k, v in row.items()}
                    for name, row in table.items()}

        return {
            "type_names": list(self.type_names), "iou": float(self.iou), "conf": float(self.conf),
            "cls_accuracy": num(self.cls_accuracy), "matched": self.matched, "gt_boxes": self.gt_boxes,
            "detection_recall": num(self.detection_recall),
            "image_accuracy": num(self.image_accuracy), "images": self.images,
            "images_without_prediction": self.images_without_prediction,
            "typed_map50": num(self.typed_map50), "typed_map50_95": num(self.typed_map50_95),
            "untyped_boxes": self.untyped,
            # each type's own AP in the typed mAP (seed 001's per-class table)
            "typed_per_type": {c.name: {"ap50": num(c.ap50), "ap50_95": num(c.ap50_95), "instances": c.instances}
                               for c in (self.typed.per_class if self.typed is not None else [])},
            "per_type": scores(self.per_type),
            "macro": {k: num(v) for k, v in self.macro.items()},
            "confusion_matrix": np.asarray(self.confusion_matrix).astype(int).tolist(),
            "image_per_type": scores(self.image_per_type),
            "image_confusion_matrix": np.asarray(self.image_confusion_matrix).astype(int).tolist(),
        }

    def table(self) -> str:
        """Fixed-width text: the headline numbers, then one row per type (objects | images)."""
        lines = [
            f"type accuracy (matched boxes) {self.cls_accuracy:.3f}  ({self.matched}/{self.gt_boxes} "
            f"boxes matched, detection recall {self.detection_recall:.3f})",
            f"image accuracy (largest box)  {self.image_accuracy:.3f}  ({self.images} images, "
            f"{self.images_without_prediction} without prediction)",
            f"typed mAP50 {self.typed_map50:.3f}  typed mAP50-95 {self.typed_map50_95:.3f}"
            + (f"  ({self.untyped} low-scoring boxes left untyped, not in the typed mAP)" if self.untyped else ""),
            f"{'type':<16}{'P':>8}{'R':>8}{'F1':>8}{'boxes':>8} |{'P':>8}{'R':>8}{'F1':>8}{'images':>8}",
        ]
        for name in self.type_names:
            o, i = self.per_type[name], self.image_per_type[name]
            lines.append(f"{name:<16}{o['precision']:>8.3f}{o['recall']:>8.3f}{o['f1']:>8.3f}"
                         f"{o['support']:>8} |{i['precision']:>8.3f}{i['recall']:>8.3f}{i['f1']:>8.3f}"
                         f"{i['support']:>8}")
        return "\n".join(lines)

    def write_plots(self, out_dir: str | Path) -> list[Path]:
        """Object and image confusion matrices, and the typed PR curve, as PNGs in `out_dir`."""
        from mhyolo.eval.plots import plot_confusion_matrix, plot_pr_curve  # matplotlib only when plotting

        out = Path(out_dir)
        paths = [
            plot_confusion_matrix(self.confusion_matrix, self.type_names, out / PLOT_NAMES["objects"],
                                  title=f"Ball type, matched boxes (n={self.matched})"),
            plot_confusion_matrix(self.image_confusion_matrix, self.type_names, out / PLOT_NAMES["images"],
                                  title=f"Image type (n={self.images - self.images_without_prediction}, "
                                        f"{self.images_without_prediction} unpredicted)"),
        ]
        if self.typed is not None:
            paths.append(plot_pr_curve(self.typed, out / PLOT_NAMES["pr"]))
        return paths


class TypeEvaluator:
    """Collects per-image typed results, then scores them all at once with `compute()`."""

    def __init__(self, type_names: Sequence[str], iou: float = 0.5, conf: float = PREDICT_CONF):
        if not type_names:
            raise ValueError("TypeEvaluator needs at least one type name")
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"iou must be in (0, 1], got {iou}")
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {conf}")
        self.type_names = list(type_names)
        self.iou = float(iou)
        self.conf = float(conf)
        self._results: list[TypedImageResult] = []

    def __len__(self) -> int:
        return len(self._results)

    def reset(self) -> None:
        self._results.clear()

    def add(self, result: TypedImageResult) -> None:
        """Store one image; type ids are checked against `type_names` here, naming the image
        (a predicted `UNTYPED` is allowed)."""
        k = len(self.type_names)
        where = result.name or "image"
        checks = [("ground-truth", result.gt_types), ("predicted", result.pred_types[result.pred_types != UNTYPED])]
        if result.image_type is not None:
            checks.append(("image", np.array([result.image_type])))
        for what, types in checks:
            bad = types[(types < 0) | (types >= k)]
            if len(bad):
                raise DataError(f"{where}: {what} type id {int(bad[0])} is outside 0..{k - 1} "
                                f"({', '.join(self.type_names)})")
        self._results.append(result)

    def compute(self) -> TypeMetrics:
        if not self._results:
            raise DataError("no images to evaluate: the dataset is empty")
        k = len(self.type_names)
        typed = self._typed_map()  # raises a clear DataError when there is no ground truth at all

        true_obj, pred_obj = [], []
        true_img, pred_img = [], []  # pred -1: the image has no prediction
        for r in self._results:
            keep = np.flatnonzero(r.pred_scores >= self.conf)
            if (r.pred_types[keep] == UNTYPED).any():
                raise DataError(f"{r.name or 'image'}: a detection scoring >= {self.conf} was left untyped; "
                                "type accuracy needs every such detection typed")
            gi, pi = match_pairs(r.gt_boxes, r.pred_boxes[keep], r.pred_scores[keep], self.iou)
            true_obj.append(r.gt_types[gi])
            pred_obj.append(r.pred_types[keep][pi])
            if len(r.gt_boxes) == 0:
                continue
            true_img.append(largest_box_type(r.gt_boxes, r.gt_types))
            if r.image_type is not None:
                pred_img.append(r.image_type)
            elif len(keep):
                best = keep[np.argmax(r.pred_scores[keep])]  # first on ties
                pred_img.append(int(r.pred_types[best]))
            else:
                pred_img.append(-1)

        y_true, y_pred = np.concatenate(true_obj), np.concatenate(pred_obj)
        gt_boxes = sum(len(r.gt_boxes) for r in self._results)
        matched = len(y_true)
        obj_report = classification_report(y_true, y_pred, self.type_names) if matched else None
        obj_support = np.bincount(y_true, minlength=k)

        img_true, img_pred = np.array(true_img, dtype=np.int64), np.array(pred_img, dtype=np.int64)
        missing = int((img_pred < 0).sum())
        image_report, image_cm = self._image_report(img_true, img_pred)
        nan = math.nan
        return TypeMetrics(
            type_names=list(self.type_names), iou=self.iou, conf=self.conf,
            cls_accuracy=obj_report["accuracy"] if obj_report else nan,
            matched=matched, gt_boxes=gt_boxes,
            detection_recall=matched / gt_boxes if gt_boxes else nan,
            image_accuracy=float((img_true == img_pred).mean()) if len(img_true) else nan,
            images=len(img_true), images_without_prediction=missing,
            typed_map50=typed.map50, typed_map50_95=typed.map50_95,
            per_type=_per_type(obj_report, self.type_names, obj_support),
            macro=dict(obj_report["macro"]) if obj_report else {"precision": nan, "recall": nan, "f1": nan},
            confusion_matrix=(obj_report["confusion_matrix"] if obj_report
                              else np.zeros((k, k), dtype=np.int64)),
            image_per_type=image_report, image_confusion_matrix=image_cm, typed=typed,
            untyped=sum(int((r.pred_types == UNTYPED).sum()) for r in self._results),
        )

    def _typed_map(self) -> DetectionMetrics:
        """COCO mAP with types as classes over every typed detection, ranked by the typed score."""
        evaluator = DetectionEvaluator(self.type_names, class_agnostic=False)
        for r in self._results:
            typed = r.pred_types != UNTYPED
            evaluator.add(ImageResult(r.gt_boxes, r.gt_types, r.pred_boxes[typed], r.typed_scores[typed],
                                      r.pred_types[typed], r.width, r.height, r.name))
        return evaluator.compute()

    def _image_report(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[dict, np.ndarray]:
        """Per-type image scores where an unpredicted image is a miss, and the (K, K) matrix.

        An extra "no prediction" class holds the unpredicted images, so they count in each
        type's support (lowering recall) without being anybody's false positive.
        """
        k = len(self.type_names)
        if len(y_true) == 0:
            return _per_type(None, self.type_names, np.zeros(k, dtype=np.int64)), np.zeros((k, k), np.int64)
        names = [*self.type_names, "(no prediction)"]
        report = classification_report(y_true, np.where(y_pred < 0, k, y_pred), names)
        return _per_type(report, self.type_names, None), report["confusion_matrix"][:k, :k].copy()
