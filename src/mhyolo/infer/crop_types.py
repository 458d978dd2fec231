"""The crop classifier as a type source: the two-stage model's second stage.

After NMS the detector's kept boxes are cut from the original images (the crop the classifier
was trained on: `crops.crop_boxes`), all the crops of one image classified in one call of the
classifier backend (`classify_crops`, chunked only where the backend takes a fixed batch), and
each box takes the most probable type with its probability, as the multi-head model's boxes take
their head's. A box the caller does not want typed (`ImageBatch.wanted`) is not cut out or
classified: it stays `UNTYPED`.

A classifier here is anything with `names`, `imgsz`, `margin`, `path` and `probabilities` (float RGB
crops -> type probabilities; `classify.backend` has the PyTorch and ONNX Runtime ones); this module
needs none of `classify`, which builds and trains them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.crops import crop_boxes
from mhyolo.infer.postprocess import Detections
from mhyolo.infer.types import UNTYPED, BoxTypes, ImageBatch, TypeRequest, TypeSource, register_type_source

CROP_BATCH = 64  # crops per forward pass when a caller bounds memory (a whole split's crops)


def to_input(crops: np.ndarray) -> np.ndarray:
    """RGB uint8 (n, S, S, 3) -> float32 (n, 3, S, S) in [0, 1]: the classifier's input."""
    return np.divide(np.asarray(crops).transpose(0, 3, 1, 2), np.float32(255.0), dtype=np.float32)


def classify_crops(classifier: Any, crops: np.ndarray, batch: int | None = CROP_BATCH) -> np.ndarray:
    """RGB uint8 (n, S, S, 3) crops -> (n, K) float32 probabilities, at most `batch` crops per call of
    the backend (None: all in one call). A backend with a `fixed_batch` gets exactly that many per
    call: the crops are cut into such chunks and the last one padded with copies of its first crop,
    whose rows are dropped. Each crop's probabilities do not depend on the others in its call (the
    networks run in eval mode), so any chunking gives the same result to float rounding."""
    if len(crops) == 0:
        return np.zeros((0, len(classifier.names)), np.float32)
    fixed = getattr(classifier, "fixed_batch", None)
    step = fixed or batch or len(crops)
    out = []
    for start in range(0, len(crops), step):
        chunk = crops[start:start + step]
        real = len(chunk)
        if fixed and real < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], fixed - real, axis=0)])
        out.append(classifier.probabilities(to_input(chunk))[:real])
    return np.concatenate(out)


def check_types_match(classifier: Any, names: list[str], where: str) -> None:
    """The classifier's types must be the dataset's, in the same order, or ids would not line up."""
    if list(classifier.names) != list(names):
        raise ConfigError(f"{classifier.path} classifies {classifier.names} but {where} names {list(names)}: "
                          "type ids would not line up (train the classifier on this dataset's types)")


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
