"""The scorers of a validation behind one protocol: each is `reset`, fed every image with `process`,
and asked for its part of the results with `evaluate`.

A validation loop builds one `ScoredImage` per image (ground truth and what the model said of it, in
original-image pixels) and hands it to every evaluator of an `Evaluation`; the evaluators decide what
they need from it. `Evaluation.evaluate()` returns the parts by name (`{"detection": {...}, "types":
{...}}`) and `flatten` joins them once into the row `val --json` prints and every table reads. A new
kind of output (masks, keypoints) is scored by writing one evaluator and registering its builder
(`register_evaluator`); the validation loops do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mhyolo.eval.mask_metrics import MaskEvaluator, MaskImageResult
from mhyolo.eval.metrics import DetectionEvaluator, DetectionMetrics, ImageResult
from mhyolo.eval.negatives import SHOWN_CONF, NegativeStats, negative_stats
from mhyolo.eval.results import flatten
from mhyolo.eval.type_metrics import TypedImageResult, TypeEvaluator, TypeMetrics


@dataclass
class ScoredImage:
    """One image as every evaluator sees it: its ground truth and the model's boxes, xyxy in the
    original image's pixels. `types` is None when nothing typed the boxes."""

    name: str
    width: int
    height: int
    gt_boxes: np.ndarray  # (n, 4)
    gt_classes: np.ndarray  # (n,) label ids (ball types for a one-class detector)
    boxes: np.ndarray  # (m, 4)
    scores: np.ndarray  # (m,)
    classes: np.ndarray  # (m,)
    types: np.ndarray | None = None  # (m,) type ids
    type_scores: np.ndarray | None = None  # (m,) probability of each box's type
    image_type: int | None = None  # a per-image type head's one type for the image
    masks: list[Any] | None = None  # the boxes' masks (`infer.masks.BoxMask`), when the model gives them

    def detection(self) -> ImageResult:
        """The boxes as the detection scorer checks and reads them."""
        return ImageResult(gt_boxes=self.gt_boxes, gt_classes=self.gt_classes, pred_boxes=self.boxes,
                           pred_scores=self.scores, pred_classes=self.classes, width=self.width,
                           height=self.height, name=self.name)

    def typed(self, gt_boxes: np.ndarray) -> TypedImageResult:
        """The typed boxes as the type scorer reads them (`gt_boxes` already checked by `detection`)."""
        return TypedImageResult(gt_boxes=gt_boxes, gt_types=self.gt_classes, pred_boxes=self.boxes,
                                pred_scores=self.scores, pred_types=self.types, width=self.width,
                                height=self.height, name=self.name, type_scores=self.type_scores,
                                image_type=self.image_type)


class Evaluator(Protocol):
    """A scorer of one kind of output. `part` names its figures in the results (and prefixes a key
    another part already claimed); `evaluate` returns None when it saw nothing it scores."""

    part: str

    def reset(self) -> None: ...

    def process(self, image: ScoredImage, result: ImageResult) -> None: ...

    def evaluate(self) -> Mapping[str, Any] | None: ...


def detection_part(m: DetectionMetrics) -> dict[str, Any]:
    """The detection scorer's figures."""
    return {"precision": m.precision, "recall": m.recall, "map50": m.map50, "map50_95": m.map50_95,
            "images": m.images, "boxes": m.boxes}


def size_part(m: DetectionMetrics) -> dict[str, Any]:
    """The size-bin scorer's figures (per ball size, original-image pixels)."""
    return {"size_bins": m.to_dict()["size_bins"]}


class DetectionScores:
    """COCO mAP and YOLOv5's P/R of the boxes (class-agnostic for a one-class detector); keeps every
    image's `ImageResult` for the plots and the negatives."""

    part = "detection"

    def __init__(self, names: Sequence[str], class_agnostic: bool) -> None:
        self.evaluator = DetectionEvaluator(list(names), class_agnostic=class_agnostic)
        self.results: list[ImageResult] = []
        self.metrics: DetectionMetrics | None = None

    def reset(self) -> None:
        self.evaluator.reset()
        self.results.clear()
        self.metrics = None

    def process(self, image: ScoredImage, result: ImageResult) -> None:
        self.evaluator.add(result)
        self.results.append(result)

    def computed(self) -> DetectionMetrics:
        """The metrics, computed once (the size bins share the same COCO run)."""
        if self.metrics is None:
            self.metrics = self.evaluator.compute()
        return self.metrics

    def evaluate(self) -> dict[str, Any]:
        return detection_part(self.computed())


class NegativeScores:
    """False alarms a user would see on the images without a ball (`mhyolo.eval.negatives`)."""

    part = "negatives"

    def __init__(self, conf: float = SHOWN_CONF) -> None:
        self.conf = conf
        self.results: list[ImageResult] = []

    def reset(self) -> None:
        self.results.clear()

    def process(self, image: ScoredImage, result: ImageResult) -> None:
        if not len(result.gt_boxes):
            self.results.append(result)

    def stats(self) -> NegativeStats:
        return negative_stats(self.results, self.conf)

    def evaluate(self) -> dict[str, Any]:
        return self.stats().to_dict()


class TypeScores:
    """Type accuracy, typed mAP and confusion matrices of the typed boxes; nothing when no image was
    typed (a detector without a type source). Its image count becomes `types_images` in the row."""

    part = "types"

    def __init__(self, type_names: Sequence[str], conf: float) -> None:
        self.evaluator = TypeEvaluator(list(type_names), conf=conf)
        self.metrics: TypeMetrics | None = None

    def reset(self) -> None:
        self.evaluator.reset()
        self.metrics = None

    def process(self, image: ScoredImage, result: ImageResult) -> None:
        if image.types is not None:
            self.evaluator.add(image.typed(result.gt_boxes))

    def evaluate(self) -> dict[str, Any] | None:
        if not len(self.evaluator):
            return None
        self.metrics = self.evaluator.compute()
        return self.metrics.to_dict()


class SizeBinScores:
    """mAP per ball size (original-image pixels), read from the detection scorer's COCO run."""

    part = "size"

    def __init__(self, detection: DetectionScores) -> None:
        self.detection = detection

    def reset(self) -> None:
        """Nothing of its own: the detection scorer holds the images."""

    def process(self, image: ScoredImage, result: ImageResult) -> None:
        """Nothing of its own: the detection scorer holds the images."""

    def evaluate(self) -> dict[str, Any]:
        return size_part(self.detection.computed())


class MaskScores:
    """Mask mAP of a model with a mask head; nothing for a model without one. The ball sets label boxes
    only, so each true mask is the ellipse inscribed in its box (`data.segments.ellipse_masks`); scored
    class-agnostically where the boxes are."""

    part = "masks"

    def __init__(self, names: Sequence[str], class_agnostic: bool) -> None:
        self.class_agnostic = class_agnostic
        self.evaluator = MaskEvaluator(["ball"] if class_agnostic else list(names))

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, image: ScoredImage, result: ImageResult) -> None:
        if image.masks is None:
            return
        from mhyolo.data.segments import ellipse_masks

        truth = ellipse_masks(result.gt_boxes, (image.height, image.width))
        gt_classes, classes = result.gt_classes, result.pred_classes
        if self.class_agnostic:
            gt_classes, classes = np.zeros_like(gt_classes), np.zeros_like(classes)
        self.evaluator.add(MaskImageResult(truth, gt_classes, image.masks, result.pred_scores, classes, image.name))

    def evaluate(self) -> dict[str, Any] | None:
        if not len(self.evaluator):
            return None
        metrics = self.evaluator.compute()
        return {"mask_map50": metrics.map50, "mask_map50_95": metrics.map50_95}


class Evaluation:
    """Evaluators fed the same images; their parts come back in the order they were given."""

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators: list[Evaluator] = []
        self.images = 0
        for evaluator in evaluators:
            self.add(evaluator)

    def add(self, evaluator: Evaluator) -> None:
        if any(e.part == evaluator.part for e in self.evaluators):
            raise ValueError(f"two evaluators report the part {evaluator.part!r}")
        self.evaluators.append(evaluator)

    def reset(self) -> None:
        self.images = 0
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, image: ScoredImage) -> None:
        result = image.detection()  # checked once: shapes, box order, finite values, naming the image
        self.images += 1
        for evaluator in self.evaluators:
            evaluator.process(image, result)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        """`{part: {metric: value}}` for every evaluator with something to report."""
        parts: dict[str, dict[str, Any]] = {}
        for evaluator in self.evaluators:
            part = evaluator.evaluate()
            if part is not None:
                parts[evaluator.part] = dict(part)
        return parts

    def find(self, kind: type) -> Any:
        """The evaluator of class `kind` (for the rich objects behind its figures: plots, tables)."""
        for evaluator in self.evaluators:
            if isinstance(evaluator, kind):
                return evaluator
        raise LookupError(f"no {kind.__name__} in this evaluation")


@dataclass(frozen=True)
class EvaluationContext:
    """What an evaluator may be built from: the dataset's class names, the model's type names, whether
    boxes are judged class-agnostically, and the score from which a box counts for the type accuracy."""

    names: tuple[str, ...]
    type_names: tuple[str, ...]
    class_agnostic: bool
    type_conf: float


# An evaluator's builder gets the context and the evaluation built so far (to read an earlier scorer's work).
EvaluatorBuilder = Callable[[EvaluationContext, Evaluation], Evaluator]
EVALUATORS: dict[str, EvaluatorBuilder] = {}


def register_evaluator(part: str, build: EvaluatorBuilder) -> None:
    """Add a scorer to every validation, after those registered before it (its part comes after theirs)."""
    if part in EVALUATORS:
        raise ValueError(f"an evaluator of part {part!r} is registered already")
    EVALUATORS[part] = build


def unregister_evaluator(part: str) -> None:
    """Remove a scorer (an experiment's or a test's)."""
    EVALUATORS.pop(part)


register_evaluator("detection", lambda c, _: DetectionScores(c.names, c.class_agnostic))
register_evaluator("negatives", lambda c, _: NegativeScores())
register_evaluator("types", lambda c, _: TypeScores(c.type_names, c.type_conf))
register_evaluator("size", lambda c, built: SizeBinScores(built.find(DetectionScores)))
register_evaluator("masks", lambda c, _: MaskScores(c.names, c.class_agnostic))


def standard_evaluators(context: EvaluationContext) -> Evaluation:
    """Every registered scorer, in registration order (boxes, false alarms on ball-free images, types,
    ball sizes, then any added)."""
    evaluation = Evaluation([])
    for part, build in EVALUATORS.items():
        evaluator = build(context, evaluation)
        if evaluator.part != part:
            raise ValueError(f"the evaluator registered as {part!r} reports part {evaluator.part!r}")
        evaluation.add(evaluator)
    return evaluation


def row_of(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The one flat results row of a validation's parts (`flatten`, in the parts' order)."""
    return flatten(parts.items())
