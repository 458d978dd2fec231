"""The crop classifier as a type source: the two-stage model's second stage.

After NMS the detector's kept boxes of a whole batch are cut from the original images (the crop
the classifier was trained on: `crops.crop_boxes`), classified in batches, and each box takes the
most probable type with its probability, as the multi-head model's boxes take their head's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.postprocess import Detections
from mhyolo.infer.types import BoxTypes, ImageBatch, TypeRequest, TypeSource, register_type_source


def check_detector(backend: Any, classifier: Any) -> None:
    """A crop classifier types the boxes of a one-class detector; any other detector already
    names a class per box, which the classifier would silently contradict."""
    names = list(getattr(backend, "names", []))
    if len(names) != 1:
        where = getattr(backend, "path", None) or "the detector"
        raise ConfigError(f"{where} detects {len(names)} classes ({', '.join(names[:5])}); a crop classifier "
                          f"({classifier.path}) types the boxes of a one-class detector (nc=1)")


@register_type_source
class CropClassifierTypes(TypeSource):
    """Each kept box typed by a classifier run on its crop of the original image."""

    key = "crop_classifier"
    priority = 0  # given explicitly: it wins over any head the detector has

    def __init__(self, classifier: Any) -> None:
        super().__init__(classifier.names)
        self.classifier = classifier

    @classmethod
    def choose(cls, request: TypeRequest) -> TypeSource | None:
        if request.classifier is None:
            return None
        check_detector(request.backend, request.classifier)
        return cls(request.classifier)

    def assign(self, outputs: Mapping[str, Any], kept: Sequence[Detections], batch: ImageBatch) -> list[BoxTypes]:
        from mhyolo.classify.backend import classify_crops
        from mhyolo.classify.crops import crop_boxes

        counts = [len(boxes) for boxes in batch.boxes]
        if sum(counts) == 0:
            return [BoxTypes(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in kept]
        if batch.originals is None:
            raise ConfigError("a crop classifier needs the original images to cut its crops from")
        originals = batch.originals()
        size, margin = self.classifier.imgsz, self.classifier.margin
        crops = np.concatenate([crop_boxes(image, boxes, size, margin)[..., ::-1]  # BGR originals -> RGB crops
                                for image, boxes in zip(originals, batch.boxes)])
        probs = classify_crops(self.classifier, crops)
        ids, scores = probs.argmax(axis=1).astype(np.int64), probs.max(axis=1).astype(np.float32)
        out, start = [], 0
        for n in counts:
            out.append(BoxTypes(ids[start:start + n], scores[start:start + n]))
            start += n
        return out
