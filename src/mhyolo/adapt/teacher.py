"""The teacher: the model that labels the target images, with strong inference settings.

How the teacher predicts is a registered kind (`@register_teacher("name")`, chosen by
`--teacher`): `auto` slices a frame much larger than the model's input (`infer.slicing`: tiles at
the input size plus the whole frame, so a small ball keeps its pixels) and runs any other image
whole; `whole` and `sliced` force one way. A stronger predictor (several scales, flips) is one more
registered builder; nothing else changes.

Every box at or above the ignore threshold is kept here with its score, its detector class and
its pseudo class (the type the model gives it, else its class): what to keep, ignore or drop is
decided afterwards (`adapt.select`), so a new threshold needs no new teacher pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from mhyolo.errors import ConfigError
from mhyolo.infer.predictor import InferenceBackend, Prediction, Predictor
from mhyolo.infer.slicing import DEFAULT_OVERLAP, SlicedPredictor, SliceSettings
from mhyolo.infer.sources import read_image

NMS_IOU = 0.45


@dataclass(frozen=True)
class TeacherSettings:
    imgsz: int  # the model's input size; also the tile size when slicing
    conf: float  # the lowest score kept (the ignore threshold)
    iou: float = NMS_IOU
    slice_factor: float = 2.0  # auto: slice images whose long side is at least this x imgsz
    overlap: float = DEFAULT_OVERLAP


class ImagePredictor(Protocol):
    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...


TeacherBuilder = Callable[[InferenceBackend, TeacherSettings], ImagePredictor]
TEACHERS: dict[str, TeacherBuilder] = {}


def register_teacher(name: str) -> Callable[[TeacherBuilder], TeacherBuilder]:
    """Make a teacher predictor available as `--teacher name`."""

    def wrap(builder: TeacherBuilder) -> TeacherBuilder:
        if name in TEACHERS:
            raise ValueError(f"teacher '{name}' is registered twice")
        TEACHERS[name] = builder
        return builder
    return wrap


def teacher_builder(name: str) -> TeacherBuilder:
    if name not in TEACHERS:
        raise ConfigError(f"--teacher {name}: unknown (registered: {', '.join(sorted(TEACHERS))})")
    return TEACHERS[name]


def build_teacher(name: str, model: InferenceBackend, settings: TeacherSettings) -> ImagePredictor:
    """The teacher's predictor: the seam where a stronger one plugs in."""
    return teacher_builder(name)(model, settings)


def _whole(model: InferenceBackend, settings: TeacherSettings) -> Predictor:
    return Predictor(model, imgsz=settings.imgsz, conf=settings.conf, iou=settings.iou, rect=True)


class SlicingTeacher:
    """Tiles (plus the whole image) for images at least `factor` x imgsz on their long side; the
    whole image alone for smaller ones."""

    def __init__(self, model: InferenceBackend, settings: TeacherSettings, factor: float) -> None:
        self.whole = _whole(model, settings)
        self.sliced = SlicedPredictor(self.whole, SliceSettings(size=settings.imgsz, overlap=settings.overlap))
        self.min_side = factor * settings.imgsz

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [(self.sliced if max(image.shape[:2]) >= self.min_side else self.whole).predict([image])[0]
                for image in images]


@register_teacher("auto")
def auto_teacher(model: InferenceBackend, settings: TeacherSettings) -> ImagePredictor:
    return SlicingTeacher(model, settings, settings.slice_factor)


@register_teacher("sliced")
def sliced_teacher(model: InferenceBackend, settings: TeacherSettings) -> ImagePredictor:
    return SlicingTeacher(model, settings, 1.0 + 1e-9)  # any image larger than one tile


@register_teacher("whole")
def whole_teacher(model: InferenceBackend, settings: TeacherSettings) -> ImagePredictor:
    return _whole(model, settings)


# ----------------------------------------------------------------------- what the teacher says
def label_names(model: Any) -> list[str]:
    """The names of the pseudo-labels' classes: the model's types when it has a type head (a
    dataset's class ids are ball types), else its detector classes."""
    heads = getattr(model, "heads", {})
    if "type" in heads or "image_type" in heads:
        names = getattr(model, "type_names", None)
        return list(names) if names else [str(i) for i in range(int(model.yaml["ntypes"]))]
    return list(model.names)


@dataclass
class ImageBoxes:
    """The teacher's boxes on one image (original pixels), every one at or above the ignore threshold."""

    path: str
    shape: tuple[int, int]  # (height, width)
    boxes: np.ndarray  # (n, 4) xyxy
    scores: np.ndarray  # (n,)
    labels: np.ndarray  # (n,) pseudo class: the type, else the detector class
    error: str | None = None  # the image could not be read

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "shape": list(self.shape), "error": self.error,
                "boxes": np.round(self.boxes, 2).tolist(), "scores": np.round(self.scores, 5).tolist(),
                "labels": self.labels.astype(int).tolist()}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ImageBoxes:
        return cls(path=item["path"], shape=tuple(item["shape"]), error=item["error"],  # type: ignore[arg-type]
                   boxes=np.asarray(item["boxes"], np.float32).reshape(-1, 4),
                   scores=np.asarray(item["scores"], np.float32), labels=np.asarray(item["labels"], np.int64))


def boxes_of(prediction: Prediction, path: str, classes: Sequence[int] | None) -> ImageBoxes:
    """A prediction as pseudo-label candidates: only the detector `classes` asked for (all: None)."""
    keep = np.ones(len(prediction), bool) if classes is None else np.isin(prediction.class_ids, list(classes))
    labels = prediction.type_ids if prediction.has_types else prediction.class_ids
    return ImageBoxes(path=path, shape=prediction.image_shape, boxes=prediction.boxes[keep].astype(np.float32),
                      scores=prediction.scores[keep].astype(np.float32), labels=np.asarray(labels)[keep])


def label_images(teacher: ImagePredictor, paths: Sequence[str], classes: Sequence[int] | None,
                 progress: bool = True, desc: str = "teacher") -> list[ImageBoxes]:
    """The teacher on every image, one at a time (any size, sliced or not); an unreadable file
    becomes an entry with its `error`."""
    out: list[ImageBoxes] = []
    for path in tqdm(paths, desc=desc, unit="img", disable=not progress, leave=False):
        image, error = read_image(Path(path))
        if image is None:
            empty = np.zeros((0, 4), np.float32)
            out.append(ImageBoxes(path, (0, 0), empty, np.zeros(0, np.float32), np.zeros(0, np.int64), error))
            continue
        out.append(boxes_of(teacher.predict([image])[0], path, classes))
    return out


def write_predictions(path: Path, items: Sequence[ImageBoxes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item.to_json()) + "\n")


def read_predictions(path: Path) -> list[ImageBoxes]:
    with path.open(encoding="utf-8") as handle:
        return [ImageBoxes.from_json(json.loads(line)) for line in handle if line.strip()]
