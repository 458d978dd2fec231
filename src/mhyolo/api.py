"""The Python face of mhyolo: `mhyolo.load(path)` -> `Model` -> `predict` / `val` / `export`.

A `Model` wraps the object the command line runs too (`runtime.model.InferenceModel`: the backend,
an optional crop classifier, the input-size rule, the predictor it assembles and the scoring);
this module only gives it one documented, typed entry point (and `export_checked` for export), so
a script never needs to know which runtime a file needs or how images are letterboxed. Arrays are BGR, as OpenCV reads them (`cv2.imread`); files and folders are read
here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from mhyolo.defaults import PREDICT_CONF
from mhyolo.errors import ConfigError, DataError
from mhyolo.infer.predictor import Prediction

if TYPE_CHECKING:
    from mhyolo.infer.multiscale import ScaleSettings

ImageLike = Union[str, Path, np.ndarray]
Source = Union[ImageLike, Sequence[ImageLike]]


@dataclass
class Result:
    """The detections of one image (or video frame), in the original image's pixels."""

    prediction: Prediction
    image: np.ndarray  # the original, BGR
    name: str  # file name, "<video>:<frame>", or "image<i>" for an array
    path: Path | None = None  # the file it came from, None for an array

    def __len__(self) -> int:
        return len(self.prediction)

    @property
    def boxes(self) -> np.ndarray:
        """(n, 4) float32 x1, y1, x2, y2."""
        return self.prediction.boxes

    @property
    def scores(self) -> np.ndarray:
        return self.prediction.scores

    @property
    def names(self) -> list[str]:
        """The detector's class name of each box ("ball" for the multi-head model)."""
        return self.prediction.class_names

    @property
    def types(self) -> list[str] | None:
        """Each box's type name (e.g. "tennis-ball"), None when the model has no type head."""
        return self.prediction.type_names

    @property
    def type_scores(self) -> np.ndarray | None:
        return self.prediction.type_scores

    @property
    def masks(self) -> list[Any] | None:
        """Each box's mask (`BoxMask`: a boolean crop, its place, `.full()` for the whole image), None when
        the model has no mask head."""
        return self.prediction.masks

    def to_json(self) -> dict[str, Any]:
        """Plain data: `{"image": name, "detections": [{"box", "score", "class", "name", "type", ...}]}`."""
        return self.prediction.to_json(self.name)

    def plot(self, path: str | Path | None = None) -> np.ndarray:
        """The image with every box and its type (or class) drawn; also written to `path` when given."""
        import cv2

        from mhyolo.infer.draw import draw_predictions

        canvas = draw_predictions(self.image, self.prediction)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), canvas):
                raise DataError(f"{path}: cannot write the annotated image")
        return canvas

    def __repr__(self) -> str:
        kinds = self.types if self.types is not None else self.names
        return f"Result({self.name!r}: {len(self)} detection(s){': ' + ', '.join(kinds) if kinds else ''})"


def multiscale_settings(scales: Sequence[float | int] | ScaleSettings | None, flip: bool = False,
                        merge: str | None = None, merge_iou: float | None = None, wbf_conf: str | None = None,
                        wbf_skip: float | None = None, size_band: tuple[float, float] | None = None,
                        size_then: str | None = None, scale_weights: Sequence[float] | None = None
                        ) -> ScaleSettings | None:
    """The API's multi-scale keywords (named as the command line's flags) as `ScaleSettings`, None
    without `scales`: `merge` the rule ("wbf", "nms", "size"), `merge_iou` its match threshold,
    `wbf_conf` / `wbf_skip` weighted box fusion's score kind and skip threshold, `size_band` /
    `size_then` the size rule's [min, max] px and what merges after it, `scale_weights` a score
    factor per scale (smallest first). A ready `ScaleSettings` is taken as it is."""
    from mhyolo.infer.multiscale import DEFAULT_MERGE, ScaleSettings
    from mhyolo.infer.scale_merge import MergeOptions

    given = {"iou": merge_iou, "wbf_conf": wbf_conf, "skip": wbf_skip,
             "band": tuple(size_band) if size_band is not None else None, "then": size_then}
    named = [k for k, v in {"merge": merge, "merge_iou": merge_iou, "wbf_conf": wbf_conf, "wbf_skip": wbf_skip,
                            "size_band": size_band, "size_then": size_then, "scale_weights": scale_weights}.items()
             if v is not None] + (["flip"] if flip else [])
    if isinstance(scales, ScaleSettings):
        if named:
            raise ConfigError(f"{', '.join(named)}: already set by the ScaleSettings given as scales")
        return scales
    if scales is None:
        if named:
            raise ConfigError(f"{', '.join(named)} need{'s' if len(named) == 1 else ''} scales")
        return None
    if isinstance(scales, (str, int, float)):
        scales = [scales]
    return ScaleSettings(sizes=tuple(scales), flip=flip, merge=merge or DEFAULT_MERGE,
                              options=MergeOptions(**{k: v for k, v in given.items() if v is not None}),
                              weights=tuple(scale_weights) if scale_weights is not None else None)


def _frames(source: Source) -> Iterator[tuple[np.ndarray, str, Path | None]]:
    """(BGR image, name, path) for an array, an image file, a folder, a video, or a list of them."""
    from mhyolo.infer.sources import open_source

    items: Iterable[ImageLike] = source if isinstance(source, (list, tuple)) else [source]  # type: ignore[assignment]
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
                raise DataError(f"array {i}: expected a BGR uint8 image shaped (H, W, 3), got "
                                f"{item.dtype} {item.shape}")
            yield item, f"image{i}", None
            continue
        for frame in open_source(item):
            if not frame.ok:
                raise DataError(f"{frame.path}: {frame.error}")
            yield frame.image, frame.name, frame.path


class Model:
    """A trained model in any format mhyolo reads: `.safetensors`, a YOLOv5 `.pt`, `.onnx`,
    OpenVINO `.xml` or `.rknn` (simulator). Load it with `mhyolo.load`; with a `classifier` (a crop
    classifier from `mhyolo classify train`, or its `.onnx`) a one-class detector types its boxes
    with it: the two-stage model."""

    def __init__(self, path: str | Path, device: str = "cpu", classifier: str | Path | None = None,
                 npu_cores: str = "auto") -> None:
        from mhyolo.runtime.model import InferenceModel

        self.path = Path(path)
        self.device = device
        self.model = InferenceModel.load(self.path, device=device, classifier=classifier, npu_cores=npu_cores)

    @property
    def backend(self) -> Any:
        """The detector in its runtime (`infer.predictor.InferenceBackend`)."""
        return self.model.backend

    @property
    def classifier(self) -> Any:
        """The crop classifier typing the boxes (two-stage model), None without one."""
        return self.model.classifier

    @property
    def names(self) -> list[str]:
        """Detector class names."""
        return self.model.names

    @property
    def type_names(self) -> list[str] | None:
        """Type names of the type head (or the crop classifier), None for a detector without either."""
        return self.model.type_names

    @property
    def imgsz(self) -> int:
        """The input size used when none is asked for: an export's fixed size, else the training size."""
        return self.model.imgsz

    def predict(self, source: Source, conf: float = PREDICT_CONF, iou: float = 0.45, imgsz: int | str | None = None,
                max_det: int = 300, batch_size: int = 1, slice_size: int | None = None,
                slice_overlap: float | None = None, stream: bool = False,
                scales: Sequence[float | int] | ScaleSettings | None = None, flip: bool = False,
                merge: str | None = None, **merge_options: Any) -> list[Result] | Iterator[Result]:
        """Detections for an image file, a folder, a video, a BGR array, or a list of them.

        `slice_size` also runs overlapping tiles of that many pixels (small, distant objects);
        `scales` runs the model at several input sizes (factors below 32 of `imgsz`, else pixel sizes;
        `flip` adds each mirrored) merged by `merge` ("wbf", "nms" or "size"; keyword options as
        `multiscale_settings` takes them); `stream=True` returns an iterator, for videos and folders
        too large to hold in memory. `imgsz="native"` runs each image at its own long side (rounded to
        the stride, kept within [the model's size, 1280]): small objects in large frames stay visible.
        With none of `imgsz`, `scales`, `slice_size`, a model that takes any input size runs the default
        rule (`infer.default_rule`): the training size and each image's own size, merged by ball size."""
        from mhyolo.infer.assemble import InferenceSettings

        for name, value in (("conf", conf), ("iou", iou)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value}")
        scaled = multiscale_settings(scales, flip, merge, **merge_options)
        slicing = None
        if slice_size is not None:
            from mhyolo.infer.slicing import DEFAULT_OVERLAP, SliceSettings

            if scaled is not None:
                raise ConfigError("scales and slice_size do not combine: choose one")
            overlap = DEFAULT_OVERLAP if slice_overlap is None else slice_overlap
            slicing = SliceSettings(size=slice_size, overlap=overlap)
        elif slice_overlap is not None:
            raise ConfigError("slice_overlap needs slice_size")
        settings = InferenceSettings(conf=conf, iou=iou, max_det=max_det, batch_size=batch_size, rect=True,
                                     slicing=slicing, scales=scaled)
        predictor = self.model.predictor(
            settings, imgsz, native_conflict='imgsz="native" combines with neither scales nor slice_size: choose one')
        if slicing is not None:
            batch_size = 1  # tiles are per image
        results = self._stream(predictor, _frames(source), batch_size)
        return results if stream else list(results)

    __call__ = predict

    @staticmethod
    def _stream(predictor: Any, frames: Iterator[tuple[np.ndarray, str, Path | None]],
                batch_size: int) -> Iterator[Result]:
        batch: list[tuple[np.ndarray, str, Path | None]] = []

        def flush() -> Iterator[Result]:
            predictions = predictor.predict([image for image, _, _ in batch])  # a PyTorch model: no autograd
            for (image, name, path), prediction in zip(batch, predictions):
                yield Result(prediction=prediction, image=image, name=name, path=path)
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) == batch_size:
                yield from flush()
        if batch:
            yield from flush()

    def val(self, data: str | Path, split: str = "val", imgsz: int | str | None = None, conf: float = 0.001,
            iou: float = 0.6, batch_size: int = 8, slice_size: int | None = None,
            progress: bool = False, scales: Sequence[float | int] | ScaleSettings | None = None,
            flip: bool = False, merge: str | None = None, type_min_score: float | None = None,
            **merge_options: Any) -> dict[str, Any]:
        """Precision, recall, mAP50, mAP50-95 (and type accuracy, typed mAP for a type head or a
        classifier) on a split of a dataset's `data.yaml`: the figures `mhyolo val --json` prints;
        `scales`, `flip`, `merge` and the merge options as in `predict`, `type_min_score` as
        `--type-min-score` (a classifier's boxes below it left untyped, an approximate typed mAP)."""
        from mhyolo.data.spec import load_data_spec
        from mhyolo.infer.assemble import InferenceSettings

        slicing = None
        if slice_size is not None:
            from mhyolo.infer.slicing import SliceSettings

            slicing = SliceSettings(size=slice_size)
        scaled = multiscale_settings(scales, flip, merge, **merge_options)
        settings = InferenceSettings(conf=conf, iou=iou, batch_size=batch_size, slicing=slicing, scales=scaled)
        result = self.model.score(load_data_spec(data), split, settings, imgsz, type_min_score=type_min_score,
                                  progress=progress)
        return result.summary()

    def export(self, format: str = "onnx", out: str | Path | None = None, imgsz: int | None = None,
               images: Sequence[str | Path] | None = None, dynamic_batch: bool = False) -> Path:
        """Write the model as `format` ("onnx" or "openvino"), checked against PyTorch on `images`
        (default: the sample photos of the shared folder); returns the file. Only a PyTorch model
        (.safetensors or .pt) can be exported."""
        import torch

        from mhyolo.deploy.check import default_images, read_images
        from mhyolo.deploy.export import default_target, export_checked
        from mhyolo.runtime.load import input_size

        if not isinstance(self.backend, torch.nn.Module):
            raise ConfigError(f"{self.path}: only a PyTorch model (.safetensors or .pt) can be exported; "
                              f"this one already is a {self.path.suffix} file")
        target = default_target(self.path.stem, format, Path(out) if out is not None else None)
        done = export_checked(self.backend, target, format, input_size(self.backend, imgsz),
                              read_images(images or default_images()), dynamic_batch=dynamic_batch)
        return done.path

    def __repr__(self) -> str:
        def listed(names: list[str]) -> str:
            return str(names) if len(names) <= 8 else f"{len(names)} ({', '.join(names[:3])}, ...)"

        types = f", types {listed(self.type_names)}" if self.type_names else ""
        return f"Model({str(self.path)!r}: classes {listed(self.names)}{types}, imgsz {self.imgsz})"


def load(path: str | Path, device: str = "cpu", classifier: str | Path | None = None,
         npu_cores: str = "auto") -> Model:
    """Open a model file: mhyolo `.safetensors`, a YOLOv5 `.pt` (read without running its pickle),
    an exported `.onnx` or OpenVINO `.xml`, or an `.rknn` (on a Rockchip board's NPU with
    rknn-toolkit-lite2, `npu_cores` "auto", "0", "1", "2" or "all"; elsewhere in the RKNN simulator);
    `classifier` adds a crop classifier behind a one-class detector (the two-stage model)."""
    return Model(path, device=device, classifier=classifier, npu_cores=npu_cores)
