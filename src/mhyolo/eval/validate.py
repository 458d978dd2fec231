"""Score a model (any `InferenceBackend`) on a dataset split with the shared pre- and
post-processing, in original-image pixels, through the COCO evaluator.

Detection is judged class-agnostically by default: the detector finds "ball", and
the labels' ids (ball types) are the type head's business.

With a crop classifier (the two-stage model) every kept box is typed by default, as the typed mAP
needs (`mhyolo.eval.type_metrics`, *Which boxes need a type*: no box can be skipped without
changing it), all of an image's crops in one classifier call. `type_min_score` trades that for
time: boxes scoring below it are not classified and stay out of the typed mAP, which is then the
typed mAP of a validation at `conf=type_min_score`; every other figure is unchanged, since it is
at most `TYPE_CONF`, the threshold of the type accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mhyolo.data.dataset import YoloDataset, build_dataloader
from mhyolo.data.image_file import read_image
from mhyolo.data.spec import DataSpec
from mhyolo.defaults import PREDICT_CONF
from mhyolo.errors import ConfigError
from mhyolo.eval.evaluators import (DetectionScores, Evaluation, EvaluationContext, ScoredImage, TypeScores,
                                   detection_part, row_of, size_part, standard_evaluators)
from mhyolo.eval.metrics import DetectionMetrics, ImageResult
from mhyolo.eval.negatives import NegativeStats, negative_stats
from mhyolo.eval.type_metrics import TypeMetrics
from mhyolo.infer.assemble import InferenceSettings, build_predictor
from mhyolo.infer.inference import Inference
from mhyolo.infer.input_size import NativeSize
from mhyolo.infer.multiscale import ScaleSettings
from mhyolo.infer.predictor import InferenceBackend
from mhyolo.infer.slicing import SliceSettings
from mhyolo.infer.preprocess import model_input, scale_boxes_to_original


TYPE_CONF = PREDICT_CONF  # detections counted for type accuracy: what `mhyolo predict` would show


def check_type_min_score(type_min_score: float | None, classifier: Any) -> None:
    """`type_min_score` leaves low-scoring boxes of a crop classifier untyped: only with a classifier (heads type
    every box at no cost), and at most `TYPE_CONF`, so the type accuracy keeps every box it counts."""
    if type_min_score is None:
        return
    if classifier is None:
        raise ConfigError("--type-min-score leaves boxes unclassified by a crop classifier: give --classifier "
                          "(a type head types every box at no extra cost)")
    if not 0.0 <= type_min_score <= TYPE_CONF:
        raise ConfigError(f"--type-min-score must be in [0, {TYPE_CONF}] (the type accuracy counts every box "
                          f"scoring >= {TYPE_CONF}), got {type_min_score}")


@dataclass
class ValidationResult:
    """A validation's figures: `parts` by scorer (`{"detection": {...}, "types": {...}}`), flattened once
    by `summary`, and the objects behind them for tables and plots."""

    metrics: DetectionMetrics
    results: list[ImageResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    types: TypeMetrics | None = None  # set when the model says what type each ball is
    parts: dict[str, dict[str, Any]] | None = None  # None: built from `metrics` and `types` when asked

    @property
    def negatives(self) -> NegativeStats:
        """False alarms on the images without a ground-truth box."""
        return negative_stats(self.results)

    def part(self, name: str) -> dict[str, Any] | None:
        """One scorer's figures (`detection`, `negatives`, `types`, `size`), None when it had none."""
        return self._parts().get(name)

    def _parts(self) -> dict[str, dict[str, Any]]:
        if self.parts is None:  # a result assembled by hand (tests): the same parts from its objects
            self.parts = {"detection": detection_part(self.metrics), "negatives": self.negatives.to_dict()}
            if self.types is not None:
                self.parts["types"] = self.types.to_dict()
            self.parts["size"] = size_part(self.metrics)
        return self.parts

    def summary(self) -> dict[str, Any]:
        """The figures as plain data (what `mhyolo val --json` prints and `Model.val` returns); the type
        part's image count (those with typed ground truth) becomes `types_images`."""
        return row_of(self._parts())

    @classmethod
    def of(cls, evaluation: Evaluation, paths: list[Path]) -> "ValidationResult":
        """The result of an evaluation fed every image of `paths`."""
        parts = evaluation.evaluate()
        detection = evaluation.find(DetectionScores)
        return cls(metrics=detection.computed(), results=list(detection.results), paths=paths,
                   types=evaluation.find(TypeScores).metrics, parts=parts)


def _ground_truth(labels: torch.Tensor, info, imgsz: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised [type, cx, cy, w, h] in the letterboxed frame -> xyxy pixels of the original."""
    if labels.numel() == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    cxcywh = labels[:, 1:5].numpy() * imgsz
    xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    return scale_boxes_to_original(xyxy, info), labels[:, 0].numpy().astype(np.int64)


@torch.inference_mode()
def validate(backend: InferenceBackend, dataset: YoloDataset, names: list[str], batch_size: int = 8,
             conf: float = 0.001, iou: float = 0.6, max_det: int = 300, class_agnostic: bool = True,
             workers: int = 0, progress: bool = True, classifier: Any = None,
             type_min_score: float | None = None) -> ValidationResult:
    """Run `backend` over every image of `dataset` (which must not augment) and compute mAP; with a
    crop `classifier`, each kept box is typed by it (the two-stage model), or only those scoring at
    least `type_min_score` (an approximate typed mAP, see the module's docstring)."""
    check_type_min_score(type_min_score, classifier)
    loader = build_dataloader(dataset, batch_size=batch_size, shuffle=False, workers=workers, seed=0)
    inference = Inference(backend, conf=conf, iou=iou, max_det=max_det, agnostic=class_agnostic,
                          classes_as_types=not class_agnostic, classifier=classifier,
                          type_min_score=type_min_score)
    evaluation = _evaluation(backend, names, class_agnostic)
    paths: list[Path] = []
    form = model_input(backend)
    for batch in tqdm(loader, desc="val", unit="batch", leave=False, disable=not progress):
        images = form.from_rgb_chw(batch.images)
        kept = inference.run(images, batch.infos, originals=lambda paths=batch.paths: [_bgr(p) for p in paths])
        for i, (item, info, path) in enumerate(zip(kept, batch.infos, batch.paths)):
            det = item.det
            labels = batch.targets[batch.targets[:, 0] == i][:, 1:]
            gt_boxes, gt_classes = _ground_truth(labels, info, dataset.imgsz)
            h0, w0 = info.original_shape
            typed = item.types
            evaluation.process(ScoredImage(
                name=str(path), width=w0, height=h0, gt_boxes=gt_boxes, gt_classes=gt_classes, boxes=item.boxes,
                scores=det.scores, classes=det.classes,
                types=typed.ids if typed is not None else None, type_scores=typed.scores if typed is not None else None,
                image_type=typed.image_type if typed is not None else None, masks=item.masks))
            paths.append(Path(path))
    return ValidationResult.of(evaluation, paths)


def _evaluation(backend: InferenceBackend, names: list[str], class_agnostic: bool) -> Evaluation:
    """The scorers of every validation; types are named as the model names them (else as the dataset)."""
    return standard_evaluators(EvaluationContext(names=tuple(names), class_agnostic=class_agnostic,
                                                 type_names=tuple(getattr(backend, "type_names", None) or names),
                                                 type_conf=TYPE_CONF))


def _bgr(path: Path) -> np.ndarray:
    """An original image as the predictor sees it (BGR), for sources that crop it."""
    return np.ascontiguousarray(read_image(Path(path))[:, :, ::-1])


@torch.inference_mode()
def validate_sliced(backend: InferenceBackend, dataset: YoloDataset, names: list[str], slicing: SliceSettings,
                    conf: float = 0.001, iou: float = 0.6, max_det: int = 300, class_agnostic: bool = True,
                    progress: bool = True, batch_size: int = 8, classifier: Any = None) -> ValidationResult:
    """`validate` with sliced inference: each original image is cut into tiles (plus the whole
    image), every tile letterboxed to `dataset.imgsz`, and the merged boxes scored."""
    predictor = build_predictor(backend, dataset.imgsz, InferenceSettings(conf=conf, iou=iou, max_det=max_det,
                                                                          batch_size=batch_size, slicing=slicing),
                                classifier=classifier, agnostic=class_agnostic, classes_as_types=not class_agnostic)
    return validate_images(predictor, backend, dataset, names, class_agnostic, progress, "val (sliced)")


@torch.inference_mode()
def validate_multiscale(backend: InferenceBackend, dataset: YoloDataset, names: list[str],
                        scales: ScaleSettings, conf: float = 0.001, iou: float = 0.6, max_det: int = 300,
                        class_agnostic: bool = True, progress: bool = True, batch_size: int = 8,
                        classifier: Any = None) -> ValidationResult:
    """`validate` with multi-scale inference: each original image run at every scale (factors of
    `dataset.imgsz`, square letterbox as `validate` uses) and the merged boxes scored."""
    predictor = build_predictor(backend, dataset.imgsz, InferenceSettings(conf=conf, iou=iou, max_det=max_det,
                                                                          batch_size=batch_size, scales=scales),
                                classifier=classifier, agnostic=class_agnostic, classes_as_types=not class_agnostic)
    return validate_images(predictor, backend, dataset, names, class_agnostic, progress, "val (multi-scale)")


@torch.inference_mode()
def validate_native(backend: InferenceBackend, dataset: YoloDataset, names: list[str], native: NativeSize,
                    conf: float = 0.001, iou: float = 0.6, max_det: int = 300, class_agnostic: bool = True,
                    progress: bool = True, batch_size: int = 8, classifier: Any = None) -> ValidationResult:
    """`validate` with each original image letterboxed at its own size (`native.size_for`,
    rectangular) instead of `dataset.imgsz`, one image at a time."""
    predictor = build_predictor(backend, dataset.imgsz, InferenceSettings(conf=conf, iou=iou, max_det=max_det,
                                                                          batch_size=batch_size),
                                classifier=classifier, native=native, agnostic=class_agnostic,
                                classes_as_types=not class_agnostic)
    return validate_images(predictor, backend, dataset, names, class_agnostic, progress, "val (native)")


def validate_images(predictor: Any, backend: InferenceBackend, dataset: YoloDataset, names: list[str],
                    class_agnostic: bool, progress: bool, desc: str) -> ValidationResult:
    """Score anything that maps an original BGR image to a `Prediction` (`predictor.predict([image])`)
    over every image of `dataset`, one image at a time."""
    evaluation = _evaluation(backend, names, class_agnostic)
    paths: list[Path] = []
    for path, labels in tqdm(list(zip(dataset.files, dataset.labels)), desc=desc, unit="img",
                             leave=False, disable=not progress):
        image = cv2.imread(str(path))
        prediction = predictor.predict([image])[0]
        h0, w0 = image.shape[:2]
        cxcywh = labels[:, 1:5] * np.array([w0, h0, w0, h0], np.float32)
        gt_boxes = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
        typed = prediction.has_types
        evaluation.process(ScoredImage(
            name=str(path), width=w0, height=h0, gt_boxes=gt_boxes.reshape(-1, 4),
            gt_classes=labels[:, 0].astype(np.int64), boxes=prediction.boxes, scores=prediction.scores,
            classes=prediction.class_ids, types=prediction.type_ids if typed else None,
            type_scores=prediction.type_scores if typed else None, masks=prediction.masks))
        paths.append(Path(path))
    return ValidationResult.of(evaluation, paths)


def class_mismatch(nc: int, spec: DataSpec) -> str | None:
    """Why a model with `nc` classes cannot be scored on `spec`, or None when it can: a one-class
    detector is scored class-agnostically (the labels' ids are its objects' types), any other
    must name as many classes as the dataset."""
    if nc == 1 or nc == spec.nc:
        return None
    return (f"the model detects {nc} classes but {spec.yaml_path} names {spec.nc}: class ids would not line up "
            "(a one-class model is scored class-agnostically)")


def score_split(backend: InferenceBackend, spec: DataSpec, imgsz: int, split: str = "val",
                progress: bool = True, slicing: SliceSettings | None = None,
                scales: ScaleSettings | None = None, native: NativeSize | None = None,
                **options) -> ValidationResult:
    """`validate` on a split of `spec`, judged the way the backend's classes call for: a
    one-class detector class-agnostically (the label ids are ball types), a multi-class one
    against the dataset's names, which must then line up with its own. With `slicing` the images
    are scored sliced, with `scales` at several input sizes (not both), with `native` each at its
    own size (`NativeSize`, not with either)."""
    if slicing is not None and scales is not None:
        raise ConfigError("sliced and multi-scale scoring do not combine: choose one")
    if native is not None and (slicing is not None or scales is not None):
        raise ConfigError("--imgsz native combines with neither --slice nor --scales: choose one")
    if options.get("type_min_score") is not None and (slicing is not None or scales is not None or native is not None):
        raise ConfigError("--type-min-score applies to whole-image validation at one input size (not sliced, multi-scale or native)")
    mismatch = class_mismatch(len(backend.names), spec)
    if mismatch:
        raise ConfigError(mismatch)
    if options.get("classifier") is not None:  # the two-stage model: its types must be the dataset's
        from mhyolo.infer.crop_types import check_types_match

        check_types_match(options["classifier"], list(spec.type_names or spec.names), str(spec.yaml_path))
    class_agnostic = len(backend.names) == 1
    dataset = YoloDataset(spec, split, imgsz, augment=None)
    if slicing is not None:
        return validate_sliced(backend, dataset, list(spec.names), slicing, class_agnostic=class_agnostic,
                               progress=progress, **options)
    if native is not None:
        return validate_native(backend, dataset, list(spec.names), native, class_agnostic=class_agnostic,
                               progress=progress, **options)
    if scales is not None:
        return validate_multiscale(backend, dataset, list(spec.names), scales, class_agnostic=class_agnostic,
                                   progress=progress, **options)
    return validate(backend, dataset, list(spec.names), class_agnostic=class_agnostic, progress=progress, **options)


def read_images(paths: list[Path]) -> list[np.ndarray]:
    """Originals for plotting predictions (BGR)."""
    return [cv2.imread(str(p)) for p in paths]
