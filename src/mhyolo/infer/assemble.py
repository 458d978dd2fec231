"""The one recipe that turns a backend into a predictor: a `Predictor` (letterbox, model, NMS, types),
wrapped for sliced inference (`SlicedPredictor`) or for several input sizes (`MultiScalePredictor`).

`InferenceSettings` are the knobs every caller shares (thresholds, batch, rectangular inputs, slicing,
scales); `build_predictor` applies them in one order. The model object (`runtime.model.InferenceModel`,
behind `mhyolo.load` and the `predict` / `val` commands), scoring (`eval.validate`) and the benchmarks
all build their predictors here, so a new wrapper (a tracker, another head's output) is added once.
It sits below `runtime.model` because scoring, which `runtime.model` calls, needs it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mhyolo.defaults import PREDICT_CONF
from mhyolo.errors import ConfigError
from mhyolo.infer.input_size import NativeSize
from mhyolo.infer.multiscale import MultiScalePredictor, ScaleSettings
from mhyolo.infer.predictor import InferenceBackend, Predictor
from mhyolo.infer.slicing import SlicedPredictor, SliceSettings


@dataclass(frozen=True)
class InferenceSettings:
    """How a model is run on an image, whatever the runtime: score and NMS thresholds, boxes kept,
    images per call, rectangular inputs (long side the input size, short side padded to the stride;
    a fixed-size graph falls back to its square), and at most one of `slicing` / `scales`."""

    conf: float = PREDICT_CONF
    iou: float = 0.45
    max_det: int = 300
    batch_size: int = 1
    rect: bool = False
    slicing: SliceSettings | None = None
    scales: ScaleSettings | None = None

    @property
    def whole_images(self) -> bool:
        """Each image in one pass (neither tiles nor several sizes): the case the native size rule is for."""
        return self.slicing is None and self.scales is None


def build_predictor(backend: InferenceBackend, imgsz: int, settings: InferenceSettings, classifier: Any = None,
                    native: NativeSize | None = None, agnostic: bool = False, classes_as_types: bool = False,
                    on_base: Any = None) -> Any:
    """A `Predictor` on `backend` at input size `imgsz` (or each image at its own size by the `native`
    rule), typing its boxes with a crop `classifier` when given, wrapped as `settings` ask. `agnostic`
    / `classes_as_types` are scoring's (class-agnostic NMS; an nc>1 detector's class as its type);
    `on_base(predictor)` is called with the unwrapped `Predictor` before any wrapper is built."""
    if settings.slicing is not None and settings.scales is not None:
        raise ConfigError("sliced and multi-scale inference do not combine: choose one")
    predictor: Any = Predictor(backend, imgsz=imgsz, conf=settings.conf, iou=settings.iou, max_det=settings.max_det,
                               batch_size=settings.batch_size, agnostic=agnostic, rect=settings.rect,
                               classes_as_types=classes_as_types, classifier=classifier, native=native)
    if on_base is not None:
        on_base(predictor)
    if settings.slicing is not None:
        predictor = SlicedPredictor(predictor, settings.slicing)
    if settings.scales is not None:
        predictor = MultiScalePredictor(predictor, settings.scales)
    return predictor
