"""The crop classifier as a type source: the two-stage model's second stage.

After NMS the detector's kept boxes are cut from the original images (the crop the classifier
was trained on: `crops.crop_boxes`), all the crops of one image classified in one call of the
classifier backend (`classify_crops`, chunked only where the backend takes a fixed batch), and
each box takes the most probable type with its probability, as the multi-head model's boxes take
their head's. A box the caller does not want typed (`ImageBatch.wanted`) is not cut out or
classified: it stays `UNTYPED`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.postprocess import Detections
from mhyolo.infer.types import UNTYPED, BoxTypes, ImageBatch, TypeRequest, TypeSource, register_type_source


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

        wanted = [batch.wanted_mask(i) for i in range(len(batch.boxes))]
        out = [BoxTypes(np.full(len(mask), UNTYPED, np.int64), np.zeros(len(mask), np.float32)) for mask in wanted]
        if not any(mask.any() for mask in wanted):
            return out
        if batch.originals is None:
            raise ConfigError("a crop classifier needs the original images to cut its crops from")
        originals = batch.originals()
        size, margin = self.classifier.imgsz, self.classifier.margin
        for image, boxes, mask, types in zip(originals, batch.boxes, wanted, out):
            if not mask.any():
                continue
            crops = crop_boxes(image, np.asarray(boxes)[mask], size, margin)[..., ::-1]  # BGR original -> RGB
            probs = classify_crops(self.classifier, crops, batch=None)  # one call for the image's crops
            types.ids[mask] = probs.argmax(axis=1)
            types.scores[mask] = probs.max(axis=1)
        return out
