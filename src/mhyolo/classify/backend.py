"""Crop classifiers behind one interface, whatever runs them: PyTorch (`.safetensors`) or ONNX
Runtime (`.onnx`, FP32 or INT8 from `mhyolo classify export`).

A backend takes crops as the classifier was trained on them (RGB uint8, `imgsz` square) and
returns type probabilities; `infer.crop_types.classify_crops` batches any number of crops through
it, in as few calls as the backend and the caller allow (a graph exported with a fixed batch takes
exactly that many crops a call: the last call is padded and the padding's rows dropped). The type
source that puts one behind a detector is `infer.crop_types`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhyolo.classify.model import ClassifierSpec
from mhyolo.errors import WeightsError
from mhyolo.infer.arrays import as_numpy
from mhyolo.infer.crop_types import CROP_BATCH



class ClassifierBackend(ABC):
    """A crop classifier ready to run: its spec (names, crop size, margin) and `probabilities`.

    `fixed_batch` is the number of crops every call must hold (a graph exported with a static
    batch dimension), None when a call takes any number."""

    fixed_batch: int | None = None

    def __init__(self, path: Path, spec: ClassifierSpec, metadata: dict[str, Any]) -> None:
        self.path = path
        self.spec = spec
        self.metadata = metadata

    @property
    def names(self) -> list[str]:
        return list(self.spec.names)

    @property
    def imgsz(self) -> int:
        return int(self.spec.imgsz)

    @property
    def margin(self) -> float:
        return float(self.spec.margin)

    @abstractmethod
    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """(n, 3, S, S) float RGB in [0, 1] -> (n, K) float32 probabilities."""


class TorchClassifier(ClassifierBackend):
    """The trained network in PyTorch (eval mode, no gradients).

    One call takes any number of crops and runs them in forward passes of at most `pass_size`: the
    activations of a whole image's crops at once are what bounds memory (ResNet26d at 224 px: about
    0.7 GB more for 64 crops, 3.5 GB for 300, `max_det`'s cap), and in eval mode a crop's
    probabilities do not depend on the crops beside it."""

    def __init__(self, path: Path, device: Any = "cpu", pass_size: int = CROP_BATCH) -> None:
        from mhyolo.classify.checkpoint import load_classifier_checkpoint

        checkpoint = load_classifier_checkpoint(path)
        super().__init__(Path(path), checkpoint.spec, checkpoint.metadata)
        self.net = checkpoint.net.to(device).eval()
        self.device = torch.device(device)
        self.pass_size = pass_size

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        parts = x.split(self.pass_size) if len(x) else (x,)
        return np.concatenate([self.net(part.to(self.device)).softmax(-1).float().cpu().numpy() for part in parts])


class OnnxClassifier(ClassifierBackend):
    """An exported classifier in ONNX Runtime's CPU provider (output `probs`; `mhyolo classify export`
    writes a dynamic batch, a graph with a static one is fed that many crops a call)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from mhyolo.classify.checkpoint import read_classifier_onnx_metadata, spec_from_metadata
        from mhyolo.infer.backends.onnxruntime_backend import cpu_session

        meta = read_classifier_onnx_metadata(path)
        super().__init__(Path(path), spec_from_metadata(meta, str(path)), meta)
        self.session = cpu_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        first = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = first if isinstance(first, int) and first > 0 else None

    def probabilities(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(as_numpy(x), dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: array})[0], dtype=np.float32)


def load_classifier(path: str | Path, device: Any = "cpu", threads: int | None = None) -> ClassifierBackend:
    """A classifier file as a backend, by suffix: `.safetensors` (PyTorch) or `.onnx` (ONNX Runtime)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"classifier file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return TorchClassifier(path, device=device)
    if suffix == ".onnx":
        return OnnxClassifier(path, threads=threads)
    raise WeightsError(f"{path}: a crop classifier is a .safetensors (mhyolo classify train) or an .onnx "
                       f"(mhyolo classify export) file, not '{suffix}'")
