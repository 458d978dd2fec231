"""The crop classifier of a two-stage row, in the runtime of the detector it sits behind.

A two-stage benchmark row is the detector in one format plus the classifier in the matching one
(PyTorch with PyTorch, ONNX Runtime FP32 with FP32, INT8 with INT8), so it is timed in the same
runtimes as the multi-head model. The classifier's files are made once into `out/classifier/`
(checked against PyTorch as `mhyolo classify export` checks them) and reused by name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mhyolo.bench.formats import make_once
from mhyolo.errors import ConfigError

CLASSIFIER_FORMATS = {"torch": "PyTorch", "onnx": "ONNX Runtime FP32", "onnx-int8": "ONNX Runtime INT8"}


@dataclass
class ClassifierFiles:
    weights: Path  # the classifier's .safetensors
    out: Path
    data_yaml: Path | None  # crops to calibrate INT8 (train) and check exports (val) on
    threads: int | None = None
    calib_crops: int = 64
    progress: bool = True
    _crops: tuple[torch.Tensor, list[torch.Tensor]] | None = field(default=None, init=False, repr=False)

    def say(self, message: str) -> None:
        if self.progress:
            print(f"    {message}", file=sys.stderr, flush=True)

    def _check_and_calibration(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self._crops is None:
            from mhyolo.classify.export import check_and_calibration_crops

            self._crops = check_and_calibration_crops(self.weights, self.data_yaml, self.calib_crops)
        return self._crops

    def path(self, fmt: str) -> Path:
        """The classifier file for a detector format (made on first request)."""
        from mhyolo.classify.export import export_classifier_onnx, quantize_classifier

        if fmt not in CLASSIFIER_FORMATS:
            raise ConfigError(f"the crop classifier runs in {', '.join(CLASSIFIER_FORMATS.values())} only")
        if fmt == "torch":
            return self.weights
        stem = self.weights.stem
        check, calibration = self._check_and_calibration()
        onnx_path = make_once(self.out / f"{stem}.onnx", lambda t: export_classifier_onnx(self.weights, t, check).path,
                              "exporting the classifier to ONNX", self.say)
        if fmt == "onnx":
            return onnx_path
        if not calibration:
            raise ConfigError("an INT8 classifier needs --data (its train crops calibrate it)")
        return make_once(self.out / f"{stem}_int8.onnx",
                         lambda t: quantize_classifier(onnx_path, t, calibration, self.weights, check).path,
                         "quantizing the classifier (ONNX Runtime static INT8)", self.say)

    def backend(self, fmt: str) -> tuple[Any, Path]:
        from mhyolo.classify.backend import load_classifier

        path = self.path(fmt)
        return load_classifier(path, threads=self.threads), path
