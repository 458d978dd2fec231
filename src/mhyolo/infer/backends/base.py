"""What every exported-model runtime shares: metadata, input checks and read-back.

A runtime subclass only implements `_infer` (one input array -> named output
arrays); shapes are checked, fixed-batch graphs are fed one image at a time, and
`predict` goes through the shared `reconstruct`, so ONNX Runtime, OpenVINO (and
RKNN) differ only in how they run the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mhyolo.deploy.layout import ExportMetadata, reconstruct
from mhyolo.errors import ConfigError


class ExportedBackend:
    """Base of the runtimes that execute an exported graph (an `InferenceBackend`)."""

    def __init__(self, path: str | Path, metadata: ExportMetadata) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.names: list[str] = list(metadata.names)
        self.type_names: list[str] | None = list(metadata.type_names) if metadata.type_names else None
        self.stride = torch.tensor(metadata.strides, dtype=torch.float32)

    @property
    def imgsz(self) -> int:
        """The (square) input size the graph was exported for; it accepts no other."""
        return int(self.metadata.imgsz)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def checked_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """An input (B, 3, imgsz, imgsz) float RGB in [0, 1] as the contiguous float32 array the graph takes."""
        array = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        size = self.imgsz
        if array.ndim != 4 or array.shape[1] != 3 or array.shape[2:] != (size, size):
            raise ConfigError(f"{self.path}: expects input (B, 3, {size}, {size}) as exported, got "
                              f"{tuple(array.shape)}; use --imgsz {size} or export again at the size you need")
        return np.ascontiguousarray(array, dtype=np.float32)

    def run(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Named graph outputs for an input (B, 3, imgsz, imgsz) float RGB in [0, 1]."""
        array = self.checked_input(x)
        if self.metadata.dynamic_batch or array.shape[0] == 1:
            return self._infer(array)
        parts = [self._infer(array[i:i + 1]) for i in range(array.shape[0])]  # fixed batch of 1
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded detections (and type probabilities) like `YoloModel.predict`."""
        return reconstruct(self.run(x), self.metadata)
