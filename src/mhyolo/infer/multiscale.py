"""Multi-scale (and flip) inference: one image through the model at several input sizes, merged.

A model trained at 320 px sees large balls well at 320 and small ones only once the image is
fed larger. `MultiScalePredictor` wraps a `Predictor` and runs every scale (and, with `flip`,
each scale on the horizontally mirrored image, its boxes mirrored back), maps every pass's
boxes to the original pixels (the Predictor's own letterbox does) and merges them with a rule
of `infer.scale_merge` (`wbf` by default, `nms`, `size`).

Scales: a value below 32 is a factor of the model's input size (0.5 1 2 at 320 -> 160 320 640,
rounded to a multiple of the stride); a value from 32 up is a pixel size, which must be a
multiple of the stride; the word `native` is each image at its own size (`--imgsz native`'s rule:
its long side on the stride grid, kept within [the input size, 1280]), so `320 native` runs a
photo at the training size and at its own resolution. How a scale runs depends on the runtime:

* a runtime that takes any shape (PyTorch, `accepts_any_shape`) runs the Predictor at that size;
* a fixed-size exported graph runs its own size as usual, and a larger scale as tiles of its
  size over the image resized to that scale (`infer.slicing`'s tiles, merged by NMS within
  the scale); a smaller scale cannot be shown to it and is refused.

One pass (one scale, no flip) is returned as the Predictor gives it, untouched by any merge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import cv2
import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.predictor import FramePass, Prediction, Predictor, accepts_any_shape
from mhyolo.infer.scale_merge import MergeOptions, ScalePass, merge_rule
from mhyolo.infer.slicing import DEFAULT_OVERLAP, MAX_OVERLAP, SlicedPredictor, SliceSettings

FACTOR_LIMIT = 32  # scale values below this are factors of the input size, from it up pixel sizes
DEFAULT_MERGE = "wbf"


NATIVE_SCALE = "native"


def is_native(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == NATIVE_SCALE


def scale_value(value: Any) -> float:
    """One `--scales` value as a positive finite number; a `ConfigError` naming it otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--scales {value!r}: not a number (give factors of the input size below "
                          f"{FACTOR_LIMIT}, e.g. 0.5 1 2, pixel sizes, e.g. 320 640, or {NATIVE_SCALE})") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"--scales {value!r}: a scale must be a positive number")
    return number


def parse_scales(values: Sequence[Any], imgsz: int, stride: int) -> tuple[int, ...]:
    """Input sizes in pixels, smallest first, duplicates once: factors (< 32) of `imgsz` rounded to a
    multiple of `stride`, pixel sizes (>= 32) as given, which must be multiples of `stride`."""
    if not values:
        raise ConfigError("--scales needs at least one value")
    sizes = set()
    for value in values:
        if is_native(value):
            continue  # sized per image (`MultiScalePredictor`)
        number = scale_value(value)
        if number < FACTOR_LIMIT:
            size = int(round(imgsz * number / stride)) * stride
            if size < stride:
                raise ConfigError(f"--scales {value!r}: {number:g} x {imgsz} px is smaller than the model stride "
                                  f"({stride} px)")
        else:
            if number != int(number) or int(number) % stride:
                raise ConfigError(f"--scales {value!r}: a pixel size must be a multiple of the model stride "
                                  f"({stride} px)")
            size = int(number)
        sizes.add(size)
    return tuple(sorted(sizes))


@dataclass(frozen=True)
class ScaleSettings:
    """What `--scales`, `--flip`, `--merge` and the merge options ask for (runtime-free; the sizes
    are resolved against the model when the predictor is built)."""

    sizes: tuple[Any, ...]  # input sizes as given: factors (< 32) of the model's input size and/or pixel sizes
    flip: bool = False  # also run each scale on the horizontally mirrored image
    merge: str = DEFAULT_MERGE  # a rule of `scale_merge.MERGE_RULES`
    weights: tuple[float, ...] | None = None  # per-scale score factor in (0, 1], smallest scale first
    tile_overlap: float = DEFAULT_OVERLAP  # fixed-size graphs: overlap of the tiles of a larger scale
    options: MergeOptions = field(default_factory=MergeOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(self.sizes))  # a list is taken too
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(self.weights))
        if not self.sizes:
            raise ConfigError("--scales needs at least one value")
        for value in self.sizes:
            if not is_native(value):
                scale_value(value)
        merge_rule(self.merge)
        if self.weights is not None:
            bad = [w for w in self.weights if not 0.0 < w <= 1.0]
            if bad:
                raise ConfigError(f"--scale-weights {bad[0]:g}: a score factor must be in (0, 1]")
        if not 0.0 <= self.tile_overlap < MAX_OVERLAP:
            raise ConfigError(f"tile overlap {self.tile_overlap}: must be in [0, {MAX_OVERLAP})")


class ScaleRunner(Protocol):
    """Predictions at one scale, in each original image's pixels."""

    size: int

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...


@dataclass
class DirectScale:
    """A runtime that takes any shape (or a graph at its own size): the Predictor at `size`."""

    predictor: Predictor
    size: int

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return self.predictor.predict(images)


@dataclass
class TiledScale:
    """A fixed-size graph at a larger scale: the image resized so its long side is `size`, cut into
    tiles of the graph's size (`SlicedPredictor`, no whole-image pass), boxes mapped back."""

    predictor: Predictor  # at the graph's own size
    size: int
    overlap: float = DEFAULT_OVERLAP

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        sliced = SlicedPredictor(self.predictor, SliceSettings(size=self.predictor.imgsz, overlap=self.overlap,
                                                               whole_image=False, merge="nms"))
        out = []
        for image in images:
            height, width = image.shape[:2]
            factor = self.size / max(height, width)
            new_w, new_h = max(1, int(round(width * factor))), max(1, int(round(height * factor)))
            interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA  # as the letterbox resizes
            resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
            prediction = sliced.predict([resized])[0]
            boxes = prediction.boxes * np.array([width / new_w, height / new_h] * 2, np.float32)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
            out.append(replace(prediction, boxes=boxes.astype(np.float32), image_shape=(height, width)))
        return out


def scale_runner(predictor: Predictor, size: int, overlap: float = DEFAULT_OVERLAP) -> ScaleRunner:
    """How `predictor`'s model runs at `size`: directly, or as tiles on a fixed-size graph; a scale
    below a fixed graph's size is refused."""
    if accepts_any_shape(predictor.model):
        return DirectScale(predictor.at_size(size) if size != predictor.imgsz else predictor, size)
    fixed = predictor.imgsz
    if size == fixed:
        return DirectScale(predictor, size)
    if size > fixed:
        return TiledScale(predictor, size, overlap)
    where = getattr(predictor.model, "path", "the model")
    raise ConfigError(f"--scales: {where} takes a fixed {fixed} px input; a smaller scale ({size} px) cannot run "
                      f"on it (larger scales run as {fixed} px tiles): export it again at {size} px, or drop "
                      "that scale")


@dataclass
class NativeScale:
    """Each image at its own size (`Predictor` with the `NativeSize` rule above its input size)."""

    predictor: Predictor

    def size_for(self, image: np.ndarray) -> int:
        return self.predictor.native.size_for(*image.shape[:2], self.predictor.stride)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return self.predictor.predict(images)


def native_runner(predictor: Predictor) -> NativeScale:
    """The `native` scale: only a runtime that takes any shape can run each image at its own size."""
    from mhyolo.infer.input_size import NativeSize

    if not accepts_any_shape(predictor.model):
        where = getattr(predictor.model, "path", "the model")
        raise ConfigError(f"--scales {NATIVE_SCALE}: {where} takes a fixed {predictor.imgsz} px input; it cannot run "
                          "each image at its own size (give pixel sizes instead)")
    return NativeScale(predictor.with_native(NativeSize.from_low(predictor.imgsz)))


@dataclass(frozen=True)
class PassPlan:
    """One pass of an image: the scale (index of `MultiScalePredictor.runners`), mirrored or not."""

    runner: int
    flipped: bool = False


def _mirrored(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def flip_back(prediction: Prediction) -> Prediction:
    """Boxes found on the horizontally mirrored image, in the original image's pixels."""
    width = prediction.image_shape[1]
    boxes = prediction.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - prediction.boxes[:, 2], width - prediction.boxes[:, 0]
    return replace(prediction, boxes=boxes)


class MultiScalePredictor:
    """A `Predictor` run at several input sizes (and mirrored), merged into one `Prediction` per image."""

    def __init__(self, predictor: Predictor, settings: ScaleSettings) -> None:
        if getattr(predictor, "native", None) is not None:
            raise ConfigError("--imgsz native and --scales do not combine: the scales are the input sizes")
        self.predictor = predictor
        self.settings = settings
        fixed = [value for value in settings.sizes if not is_native(value)]
        self.sizes = parse_scales(fixed, predictor.imgsz, predictor.stride) if fixed else ()
        self.native = any(is_native(value) for value in settings.sizes)
        count = len(self.sizes) + int(self.native)
        if settings.weights is not None and len(settings.weights) != count:
            named = " ".join([*map(str, self.sizes), *([NATIVE_SCALE] if self.native else [])])
            raise ConfigError(f"--scale-weights: {len(settings.weights)} factor(s) for {count} scale(s) "
                              f"({named} px)")
        self.rule = merge_rule(settings.merge)
        self.options = replace(settings.options, predictor_iou=predictor.iou, max_det=predictor.max_det,
                               agnostic=predictor.agnostic)
        self.runners: list[Any] = [scale_runner(predictor, size, settings.tile_overlap) for size in self.sizes]
        if self.native:  # the native pass comes last: at or above every fixed size the model takes
            self.runners.append(native_runner(predictor))

    @property
    def inference(self) -> Any:
        """The `Inference` every pass shares (one model, one type source): what throughput mode calls."""
        return self.predictor.inference

    @property
    def batch_size(self) -> int:
        return self.predictor.batch_size

    @property
    def passes_per_image(self) -> int:
        """Passes of an image at most (a native pass equal in size to a fixed scale is not run twice)."""
        return len(self.runners) * (2 if self.settings.flip else 1)

    def plans(self, image: np.ndarray) -> list[PassPlan]:
        """The passes `image` gets, in run order: every scale (mirrored too with `flip`), except a
        native pass whose size for this image is one of the fixed scales (that pass would be run twice)."""
        fixed = set(self.sizes)
        flips = (False, True) if self.settings.flip else (False,)
        return [PassPlan(i, flipped) for i, runner in enumerate(self.runners)
                if not (isinstance(runner, NativeScale) and runner.size_for(image) in fixed)
                for flipped in flips]

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """BGR uint8 images -> one merged `Prediction` per image, same order."""
        Predictor.check_images(images)
        plans = [self.plans(image) for image in images]
        found: list[dict[PassPlan, Prediction]] = [{} for _ in images]
        for plan in dict.fromkeys(plan for image_plans in plans for plan in image_plans):
            chosen = [k for k, image_plans in enumerate(plans) if plan in image_plans]
            inputs = [_mirrored(images[k]) if plan.flipped else images[k] for k in chosen]
            for k, prediction in zip(chosen, self.runners[plan.runner].predict(inputs)):
                found[k][plan] = prediction
        return [self._merge(image, plans[k], [found[k][plan] for plan in plans[k]]) for k, image in enumerate(images)]

    def frame_passes(self, image: np.ndarray) -> list[FramePass]:
        """Throughput mode: one `FramePass` per pass of `plans(image)` (a tiled scale computed here)."""
        passes = []
        for plan in self.plans(image):
            runner = self.runners[plan.runner]
            source = _mirrored(image) if plan.flipped else image
            if isinstance(runner, TiledScale):
                passes.append(FramePass(source, done=runner.predict([source])[0]))
            else:
                passes.append(FramePass(source, runner.predictor))
        return passes

    def combine(self, image: np.ndarray, predictions: Sequence[Prediction]) -> Prediction:
        """Throughput mode: the image's merged prediction from its passes' (`frame_passes`), in order."""
        return self._merge(image, self.plans(image), predictions)

    def _merge(self, image: np.ndarray, plans: Sequence[PassPlan], predictions: Sequence[Prediction]) -> Prediction:
        """One image's passes (in its pixels) -> its `Prediction`: mirrored boxes flipped back, score
        factors applied, the passes ranked by size and merged (one pass is returned as it is)."""
        passes = []
        for plan, prediction in zip(plans, predictions, strict=True):
            if plan.flipped:
                prediction = flip_back(prediction)
            if self.settings.weights is not None:
                prediction = replace(prediction, scores=prediction.scores * np.float32(self.settings.weights[plan.runner]))
            runner = self.runners[plan.runner]
            size = runner.size_for(image) if isinstance(runner, NativeScale) else runner.size
            passes.append(ScalePass(prediction, size, size / max(image.shape[:2]), flipped=plan.flipped))
        if len(passes) == 1:
            return passes[0].prediction  # one pass: the Predictor's result as it is
        return self.rule.merge(_ranked(passes), self.options)

    def describe(self) -> str:
        """'320, 640 px + flip, merged by wbf': the run's scales as the commands print them."""
        flip = " + flip" if self.settings.flip else ""
        sizes = ", ".join(map(str, self.sizes)) + (" px" if self.sizes else "")
        native = "each image at its own size" if self.native else ""
        return f"{' and '.join(part for part in (sizes, native) if part)}{flip}, merged by {self.settings.merge}"


def _ranked(passes: list[ScalePass]) -> list[ScalePass]:
    """Each pass marked as one of the image's smallest and/or largest scales (by its input size there:
    a native pass's size depends on the image, and may equal a fixed one)."""
    low, high = min(p.size for p in passes), max(p.size for p in passes)
    return [replace(p, smallest=p.size == low, largest=p.size == high) for p in passes]

