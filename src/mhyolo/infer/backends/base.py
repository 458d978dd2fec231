"""What every exported-model runtime shares: metadata, input checks and read-back.

A runtime subclass only implements `_infer` (one input array -> named output
arrays); shapes are checked, fixed-batch graphs are fed one image at a time, and
`predict` goes through the shared `reconstruct`, so ONNX Runtime, OpenVINO (and
RKNN) differ only in how they run the graph. `GraphLevels` reads their outputs per level
(`infer.levels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.infer.layout import ExportMetadata, graph_levels, reconstruct
from mhyolo.infer.levels import LevelOutputs, LevelReader, register_level_reader
from mhyolo.infer.preprocess import ModelInput, model_input


class ExportedBackend:
    """Base of the runtimes that execute an exported graph (an `InferenceBackend`). `throughput` names
    how the throughput mode overlaps its calls (a `ModelCalls` key of `infer.stream`; None: in turn)."""

    throughput: str | None = None

    def __init__(self, path: str | Path, metadata: ExportMetadata) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.names: list[str] = list(metadata.names)
        self.type_names: list[str] | None = list(metadata.type_names) if metadata.type_names else None
        self.stride = np.asarray(metadata.strides, dtype=np.float32)

    @property
    def imgsz(self) -> int:
        """The (square) input size the graph was exported for; it accepts no other."""
        return int(self.metadata.imgsz)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def input_kind(self) -> str:
        """The input form the graph takes (`infer.preprocess.MODEL_INPUTS`), from its metadata."""
        return self.metadata.input_kind

    @property
    def input_form(self) -> ModelInput:
        return model_input(self)

    def checked_input(self, x: Any) -> np.ndarray:
        """An input batch in the graph's form (float RGB NCHW in [0, 1] unless its metadata says
        otherwise) as the contiguous array the graph takes."""
        return self.input_form.check(x, self.imgsz, str(self.path))

    def run(self, x: Any) -> dict[str, np.ndarray]:
        """Named graph outputs for an input batch in the graph's form (`checked_input`)."""
        array = self.checked_input(x)
        if self.metadata.dynamic_batch or array.shape[0] == 1:
            return self._infer(array)
        parts = [self._infer(array[i:i + 1]) for i in range(array.shape[0])]  # fixed batch of 1
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """Decoded detections (and type probabilities) like `YoloModel.predict`, as float32 arrays."""
        return reconstruct(self.run(x), self.metadata)


@register_level_reader
class GraphLevels(LevelReader):
    """An exported graph (ONNX Runtime, OpenVINO, RKNN): its named outputs, viewed per anchor."""

    key = "graph"
    priority = 10

    @classmethod
    def applies(cls, backend: Any) -> bool:
        return isinstance(backend, ExportedBackend)

    def call(self, x: Any) -> dict[str, np.ndarray]:
        return self.backend.run(x)

    def levels(self, raw: Mapping[str, np.ndarray]) -> LevelOutputs:
        return graph_levels(raw, self.backend.metadata)
