"""Image pre-processing shared by training, validation and every runtime.

One letterbox for all (`data.letterbox`, where the training dataset finds it too; re-exported
here): keeping the aspect ratio and padding with grey 114 is what the official
weights were trained with, and using the same function for PyTorch, ONNX Runtime, OpenVINO and
RKNN is what keeps their scores comparable.

What the letterboxed uint8 image becomes depends on the model: every graph takes float RGB NCHW in
[0, 1] unless its metadata says otherwise (an OpenVINO IR with the conversion inside it takes the
uint8 BGR letterbox itself, `deploy.openvino_input`). Each form is a `ModelInput` class registered
under the key the metadata records (`ExportMetadata.input_kind`); `model_input(model)` is the one
place that asks, so the predictor, validation, the export check and the benchmark feed each model
what it takes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from mhyolo.data.letterbox import PAD_VALUE, LetterboxInfo, letterbox  # noqa: F401 - one letterbox for all
from mhyolo.errors import ConfigError
from mhyolo.infer.arrays import as_numpy


def to_float_batch(images_bgr: list[np.ndarray]) -> np.ndarray:
    """Letterboxed BGR uint8 HWC images -> float RGB NCHW batch in [0, 1] (a float32 array).

    One NumPy pass per image in the calling thread (channel flip, transpose and scale read together),
    the same values as dividing in PyTorch: PyTorch spreads a conversion this small over its thread
    pool, whose wake-up cost 12 ms against 0.1 ms here on a busy 2-core machine."""
    height, width = images_bgr[0].shape[:2]
    batch = np.empty((len(images_bgr), 3, height, width), np.float32)
    for out, img in zip(batch, images_bgr):
        np.divide(img.transpose(2, 0, 1)[::-1], np.float32(255.0), out=out, dtype=np.float32)
    return batch


class ModelInput(ABC):
    """One form of network input: built from letterboxed images, checked before a graph runs."""

    key: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abstractmethod
    def from_letterbox(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Letterboxed BGR uint8 HWC images (one size) -> the input batch."""

    @abstractmethod
    def from_rgb_chw(self, images: Any) -> np.ndarray:
        """A (B, 3, H, W) uint8 RGB batch (what the dataset loader gives: an array or a tensor) -> the input
        batch."""

    @abstractmethod
    def expected_shape(self, batch: int | str, size: int) -> tuple[Any, ...]:
        """The input's shape for a batch of square `size` images."""

    @abstractmethod
    def check(self, x: Any, size: int, source: str) -> np.ndarray:
        """`x` as the contiguous array the graph takes; a clear error naming `source` if it is not one."""

    def shape_text(self, size: int) -> str:
        """'(B, 3, 320, 320)': the expected shape as the errors name it."""
        return "(" + ", ".join(str(d) for d in self.expected_shape("B", size)) + ")"

    def _shape_error(self, shape: tuple[int, ...], size: int, source: str) -> ConfigError:
        return ConfigError(f"{source}: expects input {self.shape_text(size)} {self.description} as "
                           f"exported, got {shape}; use --imgsz {size} or export again at the size you need")


MODEL_INPUTS: dict[str, ModelInput] = {}


def register_model_input(cls: type[ModelInput]) -> type[ModelInput]:
    """Class decorator: make an input form available under its `key`."""
    if not cls.key:
        raise ValueError(f"{cls.__name__} needs a key")
    MODEL_INPUTS[cls.key] = cls()
    return cls


@register_model_input
class FloatRgbNchw(ModelInput):
    """(B, 3, H, W) float32 RGB in [0, 1]: PyTorch models and every exported graph by default."""

    key = "float32_rgb_nchw"
    description = "float RGB in [0, 1]"

    def from_letterbox(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return to_float_batch(list(images_bgr))

    def from_rgb_chw(self, images: Any) -> np.ndarray:
        return np.divide(as_numpy(images), np.float32(255.0), dtype=np.float32)

    def expected_shape(self, batch: int | str, size: int) -> tuple[Any, ...]:
        return (batch, 3, size, size)

    def check(self, x: Any, size: int, source: str) -> np.ndarray:
        array = as_numpy(x).astype(np.float32, copy=False)
        if array.ndim != 4 or array.shape[1] != 3 or array.shape[2:] != (size, size):
            raise self._shape_error(tuple(array.shape), size, source)
        return np.ascontiguousarray(array, dtype=np.float32)


@register_model_input
class Uint8BgrNhwc(ModelInput):
    """(B, H, W, 3) uint8 BGR: the letterbox itself, for graphs that convert it inside (no NumPy pass,
    and an INT8 graph reads the pixels without quantizing floats back to 8 bits)."""

    key = "uint8_bgr_nhwc"
    description = "uint8 BGR (the letterboxed image)"

    def from_letterbox(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(images_bgr)

    def from_rgb_chw(self, images: Any) -> np.ndarray:
        return np.ascontiguousarray(as_numpy(images).transpose(0, 2, 3, 1)[..., ::-1])

    def expected_shape(self, batch: int | str, size: int) -> tuple[Any, ...]:
        return (batch, size, size, 3)

    def check(self, x: Any, size: int, source: str) -> np.ndarray:
        array = as_numpy(x)
        if array.dtype != np.uint8:
            raise ConfigError(f"{source}: takes the letterboxed image as uint8 BGR {self.shape_text(size)}, "
                              f"got {array.dtype} (feed it through mhyolo.infer.preprocess.model_input)")
        if array.ndim != 4 or array.shape[1:] != (size, size, 3):
            raise self._shape_error(tuple(array.shape), size, source)
        return np.ascontiguousarray(array)


def model_input(model: Any) -> ModelInput:
    """The input form `model` takes: its `input_kind` (an exported graph's metadata), float otherwise."""
    kind = getattr(model, "input_kind", FloatRgbNchw.key)
    if kind not in MODEL_INPUTS:
        raise ConfigError(f"{getattr(model, 'path', type(model).__name__)}: input kind {kind!r} unknown "
                          f"(known: {', '.join(MODEL_INPUTS)})")
    return MODEL_INPUTS[kind]


def scale_boxes_to_original(boxes: Any, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy boxes (an array or a tensor) from network-input pixels back to the original image,
    clipped to it, as float32."""
    left, top = info.pad
    h0, w0 = info.original_shape
    out = np.array(as_numpy(boxes), dtype=np.float32, copy=True)
    out[..., [0, 2]] = (out[..., [0, 2]] - left) / info.ratio
    out[..., [1, 3]] = (out[..., [1, 3]] - top) / info.ratio
    out[..., [0, 2]] = np.clip(out[..., [0, 2]], 0, w0)
    out[..., [1, 3]] = np.clip(out[..., [1, 3]], 0, h0)
    return out
