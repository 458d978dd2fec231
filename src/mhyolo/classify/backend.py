"""Crop classifiers behind one interface, whatever runs them: PyTorch (`.safetensors`) or ONNX
Runtime (`.onnx`, FP32 or INT8 from `mhyolo classify export`).

A backend takes crops as the classifier was trained on them (RGB uint8, `imgsz` square) and
returns type probabilities; `classify_crops` batches any number of crops through it. The type
source that puts one behind a detector is `classify.types`, registered when `Inference` is given
a classifier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhyolo.classify.data import to_input
from mhyolo.classify.model import ClassifierSpec
from mhyolo.errors import ConfigError, WeightsError

CROP_BATCH = 64  # crops per forward pass


class ClassifierBackend(ABC):
    """A crop classifier ready to run: its spec (names, crop size, margin) and `probabilities`."""

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
    """The trained network in PyTorch (eval mode, no gradients)."""

    def __init__(self, path: Path, device: Any = "cpu") -> None:
        from mhyolo.classify.checkpoint import load_classifier_checkpoint

        checkpoint = load_classifier_checkpoint(path)
        super().__init__(Path(path), checkpoint.spec, checkpoint.metadata)
        self.net = checkpoint.net.to(device).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        return self.net(x.to(self.device)).softmax(-1).float().cpu().numpy()


class OnnxClassifier(ClassifierBackend):
    """An exported classifier in ONNX Runtime's CPU provider (dynamic batch, output `probs`)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from mhyolo.classify.checkpoint import read_classifier_onnx_metadata, spec_from_metadata
        from mhyolo.infer.backends.onnxruntime_backend import cpu_session

        meta = read_classifier_onnx_metadata(path)
        super().__init__(Path(path), spec_from_metadata(meta, str(path)), meta)
        self.session = cpu_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
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


def classify_crops(classifier: ClassifierBackend, crops: np.ndarray, batch: int = CROP_BATCH) -> np.ndarray:
    """RGB uint8 (n, S, S, 3) crops -> (n, K) float32 probabilities, `batch` crops per call."""
    if len(crops) == 0:
        return np.zeros((0, len(classifier.names)), np.float32)
    return np.concatenate([classifier.probabilities(to_input(crops[start:start + batch]))
                           for start in range(0, len(crops), batch)])


def check_types_match(classifier: ClassifierBackend, names: list[str], where: str) -> None:
    """The classifier's types must be the dataset's, in the same order, or ids would not line up."""
    if list(classifier.names) != list(names):
        raise ConfigError(f"{classifier.path} classifies {classifier.names} but {where} names {list(names)}: "
                          "type ids would not line up (train the classifier on this dataset's types)")
