"""One batch through a backend: the forward pass, NMS once, then the type seam on the kept boxes.

`Predictor`, `validate`, the export check and the benchmark all run their batches through
`Inference`, so a box is kept by the same NMS and typed by the same source everywhere, and no
caller post-processes a backend's output a second time. The type source is chosen on the first
batch (`mhyolo.infer.types`) and kept for the run.

A backend with a level reader (exported graphs, the PyTorch model on the CPU) is read per level
(`mhyolo.infer.levels`): only rows above the objectness threshold are decoded and only kept rows
typed, with the same result as decoding every row; any other backend's `predict` is read whole.
The model call (`call`) and the rest (`finish`) are separate steps, so a caller may overlap them.
With `type_min_score`, only boxes scoring at least that are asked for a type (`ImageBatch.wanted`;
validation's approximate `--type-min-score`, see `mhyolo.eval.validate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mhyolo.defaults import PREDICT_CONF
from mhyolo.infer.arrays import as_numpy
from mhyolo.infer.levels import LevelOutputs, level_reader
from mhyolo.infer.masks import BoxMask, instance_masks
from mhyolo.infer.postprocess import Detections, non_max_suppression, suppress
from mhyolo.infer.preprocess import LetterboxInfo, scale_boxes_to_original
from mhyolo.infer.types import BoxTypes, ImageBatch, TypeRequest, TypeSource, choose_type_source


@dataclass
class Kept:
    """One image's kept detections: `det` in network-input pixels (with the rows they came from),
    `boxes` in the original image's pixels (input pixels when no letterbox was given), and their
    types (None when nothing types them)."""

    det: Detections
    boxes: np.ndarray  # (n, 4) float32 xyxy
    types: BoxTypes | None = None
    masks: list[BoxMask] | None = None  # per box, in the same pixels as `boxes`, from a mask head

    def __len__(self) -> int:
        return len(self.det)


class Inference:
    """A backend with its NMS settings and its type source: input batch -> `Kept` per image."""

    def __init__(self, backend: Any, conf: float = PREDICT_CONF, iou: float = 0.45, max_det: int = 300,
                 agnostic: bool = False, classes_as_types: bool = False, classifier: Any = None,
                 type_min_score: float | None = None) -> None:
        self.backend = backend
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.agnostic = agnostic
        self.classes_as_types = classes_as_types
        self.classifier = classifier
        self.type_min_score = type_min_score
        if classifier is not None:
            from mhyolo.infer.crop_types import check_detector  # also registers the crop classifier's source

            check_detector(backend, classifier)
        self.source: TypeSource | None = None
        self._chosen = False
        self.reader = level_reader(backend)  # None: the backend's decoded `predict` is read whole

    def type_source(self, outputs: dict[str, Any]) -> TypeSource | None:
        """The run's type source, chosen from the first outputs seen."""
        if not self._chosen:
            self.source = choose_type_source(TypeRequest(outputs=outputs, backend=self.backend,
                                                         classes_as_types=self.classes_as_types,
                                                         classifier=self.classifier))
            self._chosen = True
        return self.source

    def call(self, x: np.ndarray) -> Any:
        """The model call alone: the backend's raw outputs for `finish` (decoded rows without a reader)."""
        return self.reader.call(x) if self.reader is not None else self.backend.predict(x)

    def outputs(self, raw: Any) -> Mapping[str, Any]:
        """`call`'s result as the outputs NMS and the type seam read: per level, or a backend's decoded
        outputs as float32 arrays (tensors read back)."""
        if self.reader is not None:
            return self.reader.levels(raw)
        return {name: as_numpy(value).astype(np.float32, copy=False) for name, value in raw.items()}

    def detections(self, outputs: Mapping[str, Any]) -> list[Detections]:
        """NMS of every image of a batch's outputs, per level when they are `LevelOutputs`."""
        if not isinstance(outputs, LevelOutputs):
            return non_max_suppression(outputs["detection"], conf_thres=self.conf, iou_thres=self.iou,
                                       max_det=self.max_det, agnostic=self.agnostic)
        kept = []
        for b in range(outputs.batch_size):
            row_ids, rows = outputs.candidates(b, self.conf)
            kept.append(suppress(row_ids, rows, conf_thres=self.conf,
                                 iou_thres=self.iou, max_det=self.max_det, agnostic=self.agnostic))
        return kept

    def run(self, x: np.ndarray, infos: Sequence[LetterboxInfo] | None = None,
            originals: Callable[[], Sequence[np.ndarray]] | None = None) -> list[Kept]:
        """Kept, typed detections of every image of `x` (B, 3, H, W) float RGB in [0, 1] (or the form the
        backend's `input_kind` names).

        `infos` maps boxes back to the original images; `originals` returns those images (BGR)
        for sources that read pixels (a crop classifier), called only by them."""
        return self.finish(self.call(x), infos, originals)

    def finish(self, raw: Any, infos: Sequence[LetterboxInfo] | None = None,
               originals: Callable[[], Sequence[np.ndarray]] | None = None) -> list[Kept]:
        """`run` after the model call: decoding, NMS and types of `call`'s result."""
        outputs = self.outputs(raw)
        detections = self.detections(outputs)
        boxes = [scale_boxes_to_original(det.boxes, info) if infos is not None
                 else det.boxes.astype(np.float32) for det, info in zip(detections, infos or detections)]
        source = self.type_source(outputs)
        types: list[BoxTypes | None] = [None] * len(detections)
        if source is not None:
            wanted = (None if self.type_min_score is None
                      else [det.scores >= self.type_min_score for det in detections])
            types = list(source.assign(outputs, detections, ImageBatch(boxes=boxes, originals=originals,
                                                                       wanted=wanted)))
        masks = self.masks(outputs, detections, infos)
        return [Kept(det, box, kind, mask) for det, box, kind, mask in zip(detections, boxes, types, masks)]

    @staticmethod
    def masks(outputs: Mapping[str, Any], detections: Sequence[Detections],
              infos: Sequence[LetterboxInfo] | None) -> list[list[BoxMask] | None]:
        """Each image's instance masks when the model has a mask head (per level outputs), else None."""
        if not isinstance(outputs, LevelOutputs) or outputs.prototypes is None:
            return [None] * len(detections)
        return [instance_masks(outputs.prototypes[b], outputs.coefficient_rows(b, det.indices), det.boxes,
                               outputs.mask_stride, infos[b] if infos is not None else None)
                for b, det in enumerate(detections)]
