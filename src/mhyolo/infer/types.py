"""Which type each kept detection gets: one seam for every way a model can say it.

A *type source* is applied after NMS, to the detections one image kept. Kinds:

* `object_head`: the per-object head's output `type` (B, N, T), read at the row each kept box
  came from (`Detections.indices`; from `LevelOutputs`, only those rows' softmax is taken);
* `image_head`: the image head's output `image_type` (B, T) (or a `type` output of that
  shape), one type for every box of the image;
* `crop_classifier`: a separate classifier run on a crop of each kept box (the two-stage model;
  registered by `mhyolo.infer.crop_types`);
* `classes`: a detector with one class per type (nc=3), whose class is the type; only where
  the caller asks for it (scoring against a dataset's names), since `predict` already
  names such a box by its class.

Each kind is a class registered with `register_type_source`; `choose_type_source` asks them in
priority order and takes the first that applies. The choice is made once per run, from the
first batch's outputs (what a backend outputs does not change between batches), so
validation, prediction, the export check and the benchmark all type boxes the same way.
A caller may say which boxes need a type (`ImageBatch.wanted`): a source that pays per box (the
crop classifier) types only those and gives the others `UNTYPED`; the heads, whose types cost
nothing more per box, type every box.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mhyolo.infer.arrays import as_numpy
from mhyolo.infer.levels import LevelOutputs
from mhyolo.infer.postprocess import Detections

OBJECT_TYPE_OUTPUT = "type"  # (B, N, T) per detection row
IMAGE_TYPE_OUTPUT = "image_type"  # (B, T) per image
UNTYPED = -1  # the type id of a box its source was not asked to type (`ImageBatch.wanted`)


@dataclass
class BoxTypes:
    """The types of one image's kept boxes, in the order of its detections (`UNTYPED`, score 0, for a
    box the source was not asked to type)."""

    ids: np.ndarray  # (n,) int64
    scores: np.ndarray  # (n,) float32 probability of the chosen type
    image_type: int | None = None  # the image's one type (per-image sources)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class TypeRequest:
    """What a run offers a type source to decide whether it applies."""

    outputs: Mapping[str, Any]  # the backend's outputs for the first batch
    backend: Any
    classes_as_types: bool = False  # an nc>1 detector's classes may stand for types
    classifier: Any = None  # a crop classifier (`mhyolo.classify`), when one is given


@dataclass
class ImageBatch:
    """What a source may read besides the outputs: each image's kept boxes in its original pixels,
    on demand the original BGR images (read only by sources that crop), and which boxes need a
    type (a (n,) bool mask per image; None: all of them)."""

    boxes: Sequence[np.ndarray]
    originals: Callable[[], Sequence[np.ndarray]] | None = None
    wanted: Sequence[np.ndarray] | None = None

    def wanted_mask(self, image: int) -> np.ndarray:
        """Which of image `image`'s boxes need a type."""
        count = len(self.boxes[image])
        if self.wanted is None:
            return np.ones(count, dtype=bool)
        return np.asarray(self.wanted[image], dtype=bool).reshape(count)


class TypeSource(ABC):
    """One way of typing kept detections; subclasses register with `register_type_source`."""

    key: ClassVar[str] = ""
    priority: ClassVar[int] = 100  # lower is asked first

    def __init__(self, names: Sequence[str] | None) -> None:
        self.names: list[str] | None = list(names) if names else None

    @classmethod
    @abstractmethod
    def choose(cls, request: TypeRequest) -> TypeSource | None:
        """This source for the run, or None when it does not apply."""

    @abstractmethod
    def assign(self, outputs: Mapping[str, Any], kept: Sequence[Detections], batch: ImageBatch) -> list[BoxTypes]:
        """The types of every image's kept detections (one `BoxTypes` per image)."""


TYPE_SOURCES: dict[str, type[TypeSource]] = {}


def register_type_source(cls: type[TypeSource]) -> type[TypeSource]:
    """Class decorator: make a type source available to `choose_type_source` under its `key`."""
    if not cls.key:
        raise ValueError(f"{cls.__name__} needs a key")
    TYPE_SOURCES[cls.key] = cls
    return cls


def choose_type_source(request: TypeRequest) -> TypeSource | None:
    """The first registered source (by priority) that applies, or None: the boxes stay untyped."""
    for cls in sorted(TYPE_SOURCES.values(), key=lambda c: (c.priority, c.key)):
        source = cls.choose(request)
        if source is not None:
            return source
    return None


def _best(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax type and its probability per row of (n, T) probabilities."""
    probs = np.asarray(probs, np.float32)
    if not len(probs):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = probs.argmax(axis=1)
    return ids.astype(np.int64), probs[np.arange(len(probs)), ids]


def _probabilities(value: Any) -> np.ndarray:
    return as_numpy(value).astype(np.float32, copy=False)


@register_type_source
class ObjectHeadTypes(TypeSource):
    """Per-object head: row n of `type` is the type of detection row n."""

    key = "object_head"
    priority = 10

    @classmethod
    def choose(cls, request: TypeRequest) -> TypeSource | None:
        if isinstance(request.outputs, LevelOutputs):  # per-level type logits: per-object by construction
            return cls(getattr(request.backend, "type_names", None)) if request.outputs.types is not None else None
        value = request.outputs.get(OBJECT_TYPE_OUTPUT)
        if value is None:
            return None
        dims = np.ndim(value)
        if dims != 3:
            if dims == 2:
                return None  # one row per image: the image head's layout
            raise ValueError(f"'type' output must be (B, N, n_types) or (B, n_types), got a {dims}-d tensor")
        return cls(getattr(request.backend, "type_names", None))

    def assign(self, outputs: Mapping[str, Any], kept: Sequence[Detections], batch: ImageBatch) -> list[BoxTypes]:
        if isinstance(outputs, LevelOutputs):  # the softmax of the kept rows only
            return [BoxTypes(*_best(outputs.type_rows(b, det.indices))) for b, det in enumerate(kept)]
        probs = _probabilities(outputs[OBJECT_TYPE_OUTPUT])
        return [BoxTypes(*_best(probs[b][det.indices])) for b, det in enumerate(kept)]


@register_type_source
class ImageHeadTypes(TypeSource):
    """Image head: one type per image, given to every box of it."""

    key = "image_head"
    priority = 20
    output: str = IMAGE_TYPE_OUTPUT  # which output holds the (B, T) probabilities

    @classmethod
    def output_of(cls, outputs: Mapping[str, Any]) -> str | None:
        if IMAGE_TYPE_OUTPUT in outputs:
            return IMAGE_TYPE_OUTPUT
        value = outputs.get(OBJECT_TYPE_OUTPUT)
        return OBJECT_TYPE_OUTPUT if value is not None and np.ndim(value) == 2 else None

    @classmethod
    def choose(cls, request: TypeRequest) -> TypeSource | None:
        output = cls.output_of(request.outputs)
        if output is None:
            return None
        source = cls(getattr(request.backend, "type_names", None))
        source.output = output
        return source

    def assign(self, outputs: Mapping[str, Any], kept: Sequence[Detections], batch: ImageBatch) -> list[BoxTypes]:
        probs = _probabilities(outputs[self.output])
        out = []
        for b, det in enumerate(kept):
            ids, scores = _best(np.broadcast_to(probs[b], (len(det), probs.shape[1])))
            out.append(BoxTypes(ids, scores, image_type=int(probs[b].argmax())))
        return out


@register_type_source
class ClassTypes(TypeSource):
    """A detector with one class per type: the kept box's class is its type."""

    key = "classes"
    priority = 30

    @classmethod
    def choose(cls, request: TypeRequest) -> TypeSource | None:
        return cls(list(request.backend.names)) if request.classes_as_types else None

    def assign(self, outputs: Mapping[str, Any], kept: Sequence[Detections], batch: ImageBatch) -> list[BoxTypes]:
        # the class already is the type: the detection score alone ranks the box (x 1)
        return [BoxTypes(det.classes.astype(np.int64), np.ones(len(det), np.float32)) for det in kept]
