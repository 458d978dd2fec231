"""A batch's outputs per pyramid level, read the cheap way: threshold first, decode only what can survive.

Every runtime ends in per-level, per-anchor probabilities (an exported graph's `boxes_pN` /
`scores_pN`, the PyTorch model's sigmoid of `Detect`'s logits). Decoding all N rows (25,200
at 640) and taking the softmax of every row's types costs more than NMS itself, while at
conf 0.25 a few dozen rows pass the objectness threshold. `LevelOutputs.candidates` thresholds
objectness on the raw per-level arrays, then decodes only those rows, with the very float32
operations of `decode_levels`; `type_rows` gives the type probabilities of only the kept rows.
Row numbers stay those of the fully decoded prediction (level, anchor, row, column), so
`Detections.indices` and every per-row reader are unchanged.

`LevelOutputs` is also a read-only mapping with the keys `YoloModel.predict` returns, decoded
in full on first access, for anything that needs every row. Everything here is NumPy: a runtime's
arrays are read as they come, and the PyTorch model's tensors are read back once, by its reader.

How a backend's per-level outputs are made is a `LevelReader`: `call` is the model call alone
(what the benchmark times as "model"), `levels` turns its result into `LevelOutputs`. Readers
are classes registered with `register_level_reader`: `ModelLevels` here, `GraphLevels` beside the
exported backends (`infer.backends.base`); a backend none applies to (a hand-made one with only
`predict`) keeps the decoded path.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mhyolo.infer.arrays import as_numpy, softmax

DETECTION, OBJECT_TYPES, IMAGE_TYPES, MASKS = "detection", "type", "image_type", "masks"


def _float32(array: np.ndarray) -> np.ndarray:
    """fp16 outputs are read as float32 (as `reconstruct` does) before any comparison or arithmetic."""
    return array if array.dtype == np.float32 else array.astype(np.float32)


@dataclass(eq=False)  # compared by identity, like any output dict
class LevelOutputs(Mapping[str, np.ndarray]):
    """One batch's outputs per level, in the per-anchor layout (B, na, H, W, k) (numpy views, no copies).

    `scores` channel 0 is objectness, then the classes; `types` are per-anchor type logits."""

    boxes: list[np.ndarray]  # per level (B, na, H, W, 4): sigmoid xywh offsets
    scores: list[np.ndarray]  # per level (B, na, H, W, 1 + nc): sigmoid objectness and classes
    anchors_px: np.ndarray  # (levels, na, 2) float32, input pixels
    strides: Sequence[float]
    types: list[np.ndarray] | None = None  # per level (B, na, H, W, T) type logits
    image_type: np.ndarray | None = None  # (B, T) probabilities
    coefficients: list[np.ndarray] | None = None  # per level (B, na, H, W, nm) mask coefficients
    prototypes: np.ndarray | None = None  # (B, nm, h, w) prototype masks
    mask_stride: int = 4  # input pixels per prototype pixel
    _decoded: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.anchors_px = np.asarray(self.anchors_px, dtype=np.float32)
        sizes = [int(np.prod(s.shape[1:4])) for s in self.scores]
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)  # first row of each level

    @property
    def batch_size(self) -> int:
        return int(self.scores[0].shape[0])

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    # ------------------------------------------------------------- cheap reads
    def candidates(self, b: int, conf: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows of image `b` whose objectness is above `conf`: their numbers (int64, ascending) and the
        decoded rows (n, 5 + nc) float32 `[cx, cy, w, h, obj, cls...]`, equal to the same rows of
        `decode_levels`."""
        threshold = np.float32(conf)
        ids, rows = [], []
        for level, (boxes, scores) in enumerate(zip(self.boxes, self.scores)):
            _, _, height, width, _ = scores.shape
            flat = np.flatnonzero(_float32(scores[b, ..., 0]) > threshold)
            if not flat.size:
                continue
            anchor, cell = np.divmod(flat, height * width)
            y, x = np.divmod(cell, width)
            grid = np.stack((x, y), axis=1).astype(np.float32)
            xywh = self._box_rows(level, _float32(boxes[b, anchor, y, x]), grid, self.anchors_px[level][anchor])
            rows.append(np.concatenate((xywh, _float32(scores[b, anchor, y, x])), axis=1))
            ids.append(flat + self.offsets[level])
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 4 + self.scores[0].shape[-1]), np.float32)
        return np.concatenate(ids), np.concatenate(rows)

    def _box_rows(self, level: int, p: np.ndarray, grid: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Sigmoid box offsets `p` (..., 4) of cells `grid` (x, y) with their anchors (px) -> [cx, cy, w, h] in
        input pixels: the float32 operations of `decode_levels`, in its order (one decoder for both reads)."""
        xy = (p[..., 0:2] * 2.0 - 0.5 + grid) * np.float32(self.strides[level])
        wh = (p[..., 2:4] * 2.0) ** 2 * anchors
        return np.concatenate((xy, wh), axis=-1)

    def type_rows(self, b: int, rows: np.ndarray) -> np.ndarray:
        """Type probabilities (n, T) of image `b`'s rows `rows` (row numbers of the full prediction):
        the softmax of only those rows' logits."""
        if self.types is None:
            raise KeyError(OBJECT_TYPES)
        return softmax(self._gather(self.types, b, rows))

    def coefficient_rows(self, b: int, rows: np.ndarray) -> np.ndarray:
        """Mask coefficients (n, nm) of image `b`'s rows `rows` (row numbers of the full prediction)."""
        if self.coefficients is None:
            raise KeyError(MASKS)
        return self._gather(self.coefficients, b, rows)

    def _gather(self, per_level: Sequence[np.ndarray], b: int, rows: np.ndarray) -> np.ndarray:
        """The (n, k) values of per-anchor arrays (B, na, H, W, k) at image `b`'s rows `rows`, as float32."""
        rows = np.asarray(rows, dtype=np.int64)
        level = np.searchsorted(self.offsets, rows, side="right") - 1
        values = np.zeros((len(rows), per_level[0].shape[-1]), np.float32)
        for lv in np.unique(level):
            mine = level == lv
            _, _, height, width, _ = per_level[lv].shape
            anchor, cell = np.divmod(rows[mine] - self.offsets[lv], height * width)
            y, x = np.divmod(cell, width)
            values[mine] = _float32(per_level[lv][b, anchor, y, x])
        return values

    # ------------------------------------------------- the decoded mapping view
    def _keys(self) -> list[str]:
        keys = [DETECTION]
        if self.types is not None:
            keys.append(OBJECT_TYPES)
        if self.image_type is not None:
            keys.append(IMAGE_TYPES)
        return keys

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys():
            raise KeyError(key)
        if key not in self._decoded:
            self._decoded[key] = self._decode(key)
        return self._decoded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __contains__(self, key: object) -> bool:  # without decoding anything
        return key in self._keys()

    def __len__(self) -> int:
        return len(self._keys())

    def _decode(self, key: str) -> np.ndarray:
        """Every row, as `YoloModel.predict` returns it (the full, slow read): `candidates`' decoding of
        every cell, rows in level, anchor, row, column order."""
        if key == IMAGE_TYPES:
            return _float32(self.image_type)
        if key == OBJECT_TYPES:
            return softmax(np.concatenate([_rows_of(_float32(t)) for t in self.types], axis=1))
        rows = []
        for level, (boxes, scores) in enumerate(zip(self.boxes, self.scores)):
            _, _, height, width, _ = scores.shape
            ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                                 indexing="ij")
            xywh = self._box_rows(level, _float32(boxes), np.stack((xs, ys), axis=-1),
                                     self.anchors_px[level][None, :, None, None, :])
            rows.append(_rows_of(np.concatenate((xywh, _float32(scores)), axis=-1)))
        return np.concatenate(rows, axis=1)


def _rows_of(per_anchor_values: np.ndarray) -> np.ndarray:
    """(B, na, H, W, k) -> (B, na*H*W, k): one level's rows in anchor, row, column order."""
    return per_anchor_values.reshape(per_anchor_values.shape[0], -1, per_anchor_values.shape[-1])


def per_anchor(value: np.ndarray, na: int) -> np.ndarray:
    """A graph output (B, na*k, H, W) as the view (B, na, H, W, k): no copy."""
    batch, channels, height, width = value.shape
    return value.reshape(batch, na, channels // na, height, width).transpose(0, 1, 3, 4, 2)


# ------------------------------------------------------------------ readers
class LevelReader(ABC):
    """How one kind of backend gives `LevelOutputs`: the model call alone, then the read of its result."""

    key: ClassVar[str] = ""
    priority: ClassVar[int] = 100  # lower is asked first

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @classmethod
    @abstractmethod
    def applies(cls, backend: Any) -> bool:
        """Whether this reader reads `backend`."""

    @abstractmethod
    def call(self, x: np.ndarray) -> Any:
        """The model call alone on an input batch (B, 3, H, W)."""

    @abstractmethod
    def levels(self, raw: Any) -> LevelOutputs:
        """`call`'s result as `LevelOutputs`."""

    def __call__(self, x: np.ndarray) -> LevelOutputs:
        return self.levels(self.call(x))


LEVEL_READERS: dict[str, type[LevelReader]] = {}


def register_level_reader(cls: type[LevelReader]) -> type[LevelReader]:
    """Class decorator: make a reader available to `level_reader` under its `key`."""
    if not cls.key:
        raise ValueError(f"{cls.__name__} needs a key")
    LEVEL_READERS[cls.key] = cls
    return cls


def level_reader(backend: Any) -> LevelReader | None:
    """The first registered reader (by priority) that reads `backend`, or None: decoded rows only."""
    for cls in sorted(LEVEL_READERS.values(), key=lambda c: (c.priority, c.key)):
        if cls.applies(backend):
            return cls(backend)
    return None


@register_level_reader
class ModelLevels(LevelReader):
    """The PyTorch model: the network forward (without autograd, the input put on the model's device in
    its float type), then the heads' own activations (sigmoid, image-type softmax) on whole tensors,
    read back to the CPU as float32 arrays; decoding stays for the rows that can survive, in NumPy as
    for every runtime."""

    key = "pytorch"
    priority = 20

    @classmethod
    def applies(cls, backend: Any) -> bool:
        if "mhyolo.model.yolo" not in sys.modules:  # no model class loaded: no backend can be one
            return False
        from mhyolo.model.yolo import YoloModel

        return isinstance(backend, YoloModel)

    def call(self, x: Any) -> dict[str, Any]:
        import torch

        param = next(self.backend.parameters(), None)
        tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        if param is not None and tensor.is_floating_point():
            tensor = tensor.to(param.device, param.dtype)
        with torch.inference_mode():
            return self.backend.forward(tensor)

    def levels(self, raw: Mapping[str, Any]) -> LevelOutputs:
        import torch

        heads = self.backend.heads
        detect = self.backend.detect
        with torch.inference_mode():
            probs = [_float32(as_numpy(p)) for p in detect.probabilities(raw[DETECTION])]
            types = [_float32(as_numpy(t)) for t in raw[OBJECT_TYPES]] if OBJECT_TYPES in raw else None
            image = (_float32(as_numpy(heads[IMAGE_TYPES].inference(raw[IMAGE_TYPES]))) if IMAGE_TYPES in raw
                     else None)
            prototypes, coefficients, mask_stride = None, None, 4
            if MASKS in raw:
                prototypes = _float32(as_numpy(raw[MASKS][0]))
                coefficients = [_float32(as_numpy(c)) for c in raw[MASKS][1]]
                mask_stride = int(heads[MASKS].proto_stride)
        return LevelOutputs(boxes=[p[..., :4] for p in probs], scores=[p[..., 4:] for p in probs],
                            anchors_px=as_numpy(detect.anchors_px).astype(np.float32),
                            strides=as_numpy(detect.stride).tolist(), types=types, image_type=image,
                            coefficients=coefficients, prototypes=prototypes, mask_stride=mask_stride)
