"""One predictor over any runtime: letterbox, run the backend, NMS, map boxes back.

The predictor only needs a backend that turns an input tensor into named output
tensors and knows its class names and strides (`InferenceBackend`). The PyTorch
model is one such backend; ONNX Runtime, OpenVINO and RKNN runners are others, and
because they all share this pre- and post-processing their results are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
import copy
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from mhyolo.defaults import DEFAULT_IMGSZ, PREDICT_CONF, check_stride_multiple
from mhyolo.errors import ConfigError
from mhyolo.infer.arrays import as_numpy
from mhyolo.infer.inference import Inference
from mhyolo.infer.input_size import NativeSize
from mhyolo.infer.preprocess import PAD_VALUE, LetterboxInfo, letterbox, model_input


@runtime_checkable
class InferenceBackend(Protocol):
    """What a runtime must offer to be used by `Predictor`.

    `predict` takes a float RGB batch (B, 3, H, W) in [0, 1] (or, for a backend whose
    `input_kind` says so, another `infer.preprocess.ModelInput` form) and returns at least
    `"detection"`: (B, N, 5 + nc) rows `[cx, cy, w, h, obj, cls...]` in input pixels,
    probabilities already applied. An optional `"type"` output holds type
    probabilities, (B, N, n_types) aligned with the detection rows (per-object head)
    or (B, n_types) for the whole image; a backend with one also sets `type_names`.
    """

    names: list[str]
    stride: Any  # tensor or sequence of strides; inputs must be multiples of the largest

    def predict(self, x: np.ndarray) -> dict[str, Any]: ...


@dataclass(frozen=True)
class BoxField:
    """One per-box output of a `Prediction`: an array (or a list of names) with one entry per box, in
    box order. Selecting, joining and writing boxes as JSON go through `BOX_FIELDS`, so a new per-box
    output (a mask, a track id) is its `Prediction` attribute plus one `register_box_field` line."""

    attribute: str  # the `Prediction` attribute
    json_key: str  # its key in a `--json` detection
    dtype: Any = None  # numpy dtype of an array field; None: a list of names
    columns: int = 0  # values per box of a 2-D array field (4 for a box), 0 for one value
    digits: int | None = None  # JSON rounding of a float field

    def take(self, values: Any, index: np.ndarray) -> Any:
        return [values[i] for i in index] if self.dtype is None else values[index]

    def join(self, parts: Sequence[Any]) -> Any:
        if self.dtype is None:
            return [value for part in parts for value in part]
        joined = np.concatenate(parts)
        return (joined.reshape(-1, self.columns) if self.columns else joined).astype(self.dtype)

    def check(self, values: Any, image_shape: tuple[int, int]) -> None:
        """Refuse values that do not belong to an image of `image_shape` (boxes joined from elsewhere)."""

    def json_value(self, values: Any, i: int) -> Any:
        value = values[i]
        if self.dtype is None:
            return value
        if self.columns:
            return [round(float(v), self.digits) for v in value]
        return round(float(value), self.digits) if self.digits is not None else int(value)


BOX_FIELDS: list[BoxField] = []  # in `--json` order


def register_box_field(field: BoxField) -> BoxField:
    """Make `field` one of the outputs every `Prediction` selects, joins and writes."""
    if any(f.attribute == field.attribute for f in BOX_FIELDS):
        raise ValueError(f"box field {field.attribute} is registered already")
    BOX_FIELDS.append(field)
    return field


class MaskField(BoxField):
    """Per-box masks (`infer.masks.BoxMask`, a list); in the JSON each mask is its outline, a list of
    [x, y] pixel points of its largest region (an empty list for an empty mask)."""

    def json_value(self, values: Any, i: int) -> Any:
        return values[i].outline().tolist()

    def check(self, values: Any, image_shape: tuple[int, int]) -> None:
        if any(tuple(mask.image_shape) != tuple(image_shape) for mask in values):  # a tile's masks
            raise ConfigError("masks of tiles cannot be joined yet: predict a mask model without --slice")


for _field in (BoxField("boxes", "box", np.float32, columns=4, digits=2), BoxField("scores", "score", np.float32, digits=4),
               BoxField("class_ids", "class", np.int64), BoxField("class_names", "name"),
               BoxField("type_ids", "type", np.int64), BoxField("type_names", "type_name"),
               BoxField("type_scores", "type_score", np.float32, digits=4), MaskField("masks", "mask")):
    register_box_field(_field)


@dataclass
class Prediction:
    """Detections of one image, in the original image's pixels (numpy, runtime-free). Every per-box
    attribute is a registered `BoxField`; an optional one (the types) is None when nothing gives it."""

    boxes: np.ndarray  # (n, 4) float32 xyxy
    scores: np.ndarray  # (n,) float32
    class_ids: np.ndarray  # (n,) int64
    class_names: list[str]
    image_shape: tuple[int, int]  # (height, width) of the original image
    type_ids: np.ndarray | None = None  # (n,) int64, when the backend has a type head
    type_names: list[str] | None = None
    type_scores: np.ndarray | None = None  # (n,) float32
    masks: list[Any] | None = None  # per box an `infer.masks.BoxMask` in the original image, from a mask head

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def has_types(self) -> bool:
        return self.type_ids is not None

    def _fields(self) -> list[tuple[BoxField, Any]]:
        """The registered fields this prediction has, with their values."""
        present = ((field, getattr(self, field.attribute, None)) for field in BOX_FIELDS)
        return [(field, values) for field, values in present if values is not None]

    def subset(self, keep: np.ndarray) -> Prediction:
        """The detections selected by `keep` (a boolean mask or indices), in that order, every field."""
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, np.int64)
        return replace(self, **{field.attribute: field.take(values, index) for field, values in self._fields()})

    @classmethod
    def concatenate(cls, parts: Sequence[Prediction], image_shape: tuple[int, int] | None = None) -> Prediction:
        """The detections of several predictions of one image (tiles, passes) as one of the first's kind,
        every field the first has joined in order; `image_shape` defaults to the first's."""
        first = parts[0]
        values = {field.attribute: field.join([getattr(part, field.attribute) for part in parts])
                  for field, _ in first._fields()}
        kind = type(first)  # a prediction with fields of its own keeps its kind
        shape = image_shape if image_shape is not None else first.image_shape
        for field, _ in first._fields():
            field.check(values[field.attribute], shape)
        return kind(image_shape=shape, **values)

    def to_json(self, image_name: str) -> dict[str, Any]:
        """The `--json` line: plain Python types, boxes to 2 decimals, scores to 4."""
        fields = self._fields()
        detections = [{field.json_key: field.json_value(values, i) for field, values in fields}
                      for i in range(len(self))]
        return {"image": image_name, "detections": detections}


@dataclass(frozen=True)
class FramePass:
    """One model call a frame needs in throughput mode: `predictor` (letterbox, call, NMS) on `image`
    (the frame, or a mirrored copy), or a pass computed already (`done`: tiles, which are not one call)."""

    image: np.ndarray
    predictor: Predictor | None = None
    done: Prediction | None = None


def model_stride(model: InferenceBackend) -> int:
    """Largest stride of the backend: input sides must be multiples of it."""
    return int(np.max(as_numpy(model.stride)))


def accepts_any_shape(model: InferenceBackend) -> bool:
    """Exported graphs carry the one input size they were made for (`imgsz`); a PyTorch model
    takes any multiple of its stride."""
    return getattr(model, "imgsz", None) is None


def _name(names: Sequence[str] | None, index: int) -> str:
    return str(names[index]) if names is not None and 0 <= index < len(names) else str(index)


class Predictor:
    """Run a backend on BGR images and return `Prediction`s in original-image pixels."""

    def __init__(self, model: InferenceBackend, imgsz: int = DEFAULT_IMGSZ, conf: float = PREDICT_CONF,
                 iou: float = 0.45,
                 max_det: int = 300, batch_size: int = 1, agnostic: bool = False, rect: bool = False,
                 classes_as_types: bool = False, classifier: Any = None,
                 native: NativeSize | None = None) -> None:
        stride = model_stride(model)
        check_stride_multiple(imgsz, stride, "image size")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.imgsz = imgsz
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.batch_size = batch_size
        self.agnostic = agnostic
        self.stride = stride
        # rectangular inputs (long side imgsz, the short side padded only to the stride) need a
        # runtime that takes any shape; an exported graph with a fixed input gets the square
        self.rect = rect and accepts_any_shape(model)
        self.square_fallback = rect and not self.rect
        # `native`: each image letterboxed at its own size (`NativeSize.size_for`), rectangular
        if native is not None:
            if not accepts_any_shape(model):
                raise ConfigError(f"{getattr(model, 'path', 'the model')} has a fixed {model.imgsz}x{model.imgsz} "
                                  "input: it cannot run each image at its own size (--imgsz native); use a "
                                  "PyTorch model, or --scales / --slice to see small objects")
            native.check(stride)
        self.native = native
        self.input_form = model_input(model)  # float RGB NCHW, or what the exported graph's metadata says
        # forward, NMS once, and the type seam on the kept boxes: the model's type head, a crop
        # `classifier`, or (`classes_as_types`, for scoring an nc>1 detector) the class itself
        self.inference = Inference(model, conf=conf, iou=iou, max_det=max_det, agnostic=agnostic,
                                   classes_as_types=classes_as_types, classifier=classifier)

    def at_size(self, imgsz: int) -> Predictor:
        """This predictor at another input size: the same backend, thresholds and type source (the
        `Inference` is shared), for multi-scale inference on a runtime that takes any shape; every
        image at that size (no `native` rule)."""
        check_stride_multiple(imgsz, self.stride, "image size")
        other = copy.copy(self)
        other.imgsz = imgsz
        other.native = None
        return other

    def with_native(self, native: NativeSize) -> Predictor:
        """This predictor with each image at its own size (`native`), the rest shared: the `native`
        scale of multi-scale inference."""
        if not accepts_any_shape(self.model):
            raise ConfigError(f"{getattr(self.model, 'path', 'the model')} takes a fixed {self.imgsz} px input: it "
                              "cannot run each image at its own size")
        native.check(self.stride)
        other = copy.copy(self)
        other.native = native
        return other

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """BGR uint8 images (H, W, 3), any sizes -> one `Prediction` per image, same order."""
        self.check_images(images)
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            results.extend(self._predict_batch(images[start:start + self.batch_size]))
        return results

    @staticmethod
    def check_images(images: Sequence[np.ndarray]) -> None:
        for i, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
                shape = getattr(image, "shape", type(image).__name__)
                raise ValueError(f"image {i}: expected a BGR array shaped (H, W, 3), got {shape}")

    def _letterbox(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, LetterboxInfo]]:
        if self.native is not None:
            boxed = [letterbox(image, self.native.size_for(*image.shape[:2], self.stride), stride=self.stride)
                     for image in images]
        elif not self.rect:
            return [letterbox(image, self.imgsz) for image in images]
        else:
            boxed = [letterbox(image, self.imgsz, stride=self.stride) for image in images]
        height = max(padded.shape[0] for padded, _ in boxed)
        width = max(padded.shape[1] for padded, _ in boxed)
        # one tensor per batch: pad smaller inputs on the bottom/right (their mapping back is unchanged)
        return [(cv2.copyMakeBorder(padded, 0, height - padded.shape[0], 0, width - padded.shape[1],
                                    cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3), info) for padded, info in boxed]

    def _predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        x, infos = self.prepare(images)
        return self.finish(self.inference.call(x), images, infos)

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxInfo]]:
        """Letterboxed input batch of `images` in the form the model takes (float RGB, or the uint8
        letterbox for a graph that converts it itself; a PyTorch model's reader puts it on the model's
        device), and how each was mapped."""
        boxed = self._letterbox(images)
        x = self.input_form.from_letterbox([padded for padded, _ in boxed])
        return x, [info for _, info in boxed]

    def frame_passes(self, image: np.ndarray) -> list[FramePass]:
        """Throughput mode: the model calls one frame needs (here one, on the frame itself)."""
        return [FramePass(image, self)]

    def combine(self, image: np.ndarray, predictions: Sequence[Prediction]) -> Prediction:
        """Throughput mode: the frame's prediction from its passes' (`frame_passes`), in order."""
        return predictions[0]

    def finish(self, raw: Any, images: Sequence[np.ndarray], infos: Sequence[LetterboxInfo]) -> list[Prediction]:
        """`Prediction`s from the model call's result (`Inference.call`) on `prepare(images)`."""
        kept = self.inference.finish(raw, infos, originals=lambda: images)
        names = self.type_names
        predictions = []
        for item, info in zip(kept, infos):
            det = item.det
            prediction = Prediction(
                boxes=item.boxes,
                scores=det.scores.astype(np.float32),
                class_ids=det.classes.astype(np.int64),
                class_names=[_name(self.model.names, int(c)) for c in det.classes],
                image_shape=info.original_shape,
            )
            if item.masks is not None:
                prediction.masks = item.masks
            if item.types is not None:
                prediction.type_ids = item.types.ids
                prediction.type_scores = item.types.scores
                prediction.type_names = [_name(names, int(t)) for t in item.types.ids]
            predictions.append(prediction)
        return predictions

    @property
    def type_names(self) -> list[str] | None:
        """Names of the types the boxes get (known once the first batch has chosen the source)."""
        source = self.inference.source
        if source is not None and source.names:
            return source.names
        return getattr(self.model, "type_names", None)
