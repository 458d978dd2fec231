"""Score a model (any `InferenceBackend`) on a dataset split with the shared pre- and
post-processing, in original-image pixels, through the COCO evaluator.

Detection is judged class-agnostically by default: the detector finds "ball", and
the labels' ids (ball types) are the type head's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mhyolo.data.dataset import YoloDataset, build_dataloader
from mhyolo.eval.metrics import DetectionEvaluator, DetectionMetrics, ImageResult
from mhyolo.infer.postprocess import non_max_suppression
from mhyolo.infer.predictor import InferenceBackend
from mhyolo.infer.preprocess import scale_boxes_to_original


@dataclass
class ValidationResult:
    metrics: DetectionMetrics
    results: list[ImageResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


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
             workers: int = 0, progress: bool = True) -> ValidationResult:
    """Run `backend` over every image of `dataset` (which must not augment) and compute mAP."""
    loader = build_dataloader(dataset, batch_size=batch_size, shuffle=False, workers=workers, seed=0)
    evaluator = DetectionEvaluator(names, class_agnostic=class_agnostic)
    out = ValidationResult(metrics=None)  # type: ignore[arg-type]
    for batch in tqdm(loader, desc="val", unit="batch", leave=False, disable=not progress):
        images = batch.images.float().div_(255.0)
        detections = non_max_suppression(backend.predict(images)["detection"], conf, iou, max_det,
                                         agnostic=class_agnostic)
        for i, (det, info, path) in enumerate(zip(detections, batch.infos, batch.paths)):
            labels = batch.targets[batch.targets[:, 0] == i][:, 1:]
            gt_boxes, gt_classes = _ground_truth(labels, info, dataset.imgsz)
            h0, w0 = info.original_shape
            result = ImageResult(gt_boxes=gt_boxes, gt_classes=gt_classes,
                                 pred_boxes=scale_boxes_to_original(det.boxes.numpy(), info),
                                 pred_scores=det.scores.numpy(), pred_classes=det.classes.numpy(),
                                 width=w0, height=h0, name=str(path))
            evaluator.add(result)
            out.results.append(result)
            out.paths.append(Path(path))
    out.metrics = evaluator.compute()
    return out


def read_images(paths: list[Path]) -> list[np.ndarray]:
    """Originals for plotting predictions (BGR)."""
    return [cv2.imread(str(p)) for p in paths]
