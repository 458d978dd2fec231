"""A crop classifier as ONNX (FP32, and INT8 through ONNX Runtime's static quantization), so the
two-stage model runs in the same runtimes as the multi-head one.

The graph takes `crops` (B, 3, S, S) float RGB in [0, 1] with a dynamic batch (a frame's kept
boxes go through in one call) and returns `probs` (B, K), the softmax taken in the graph. The
classifier's metadata travel in `metadata_props` under the same key as in its checkpoint. Every
file written is checked against PyTorch on crops before it is kept: FP32 to 1e-4 in probability,
INT8 by agreement of the argmax (quantization moves probabilities, a flipped type is what matters).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhyolo.classify.checkpoint import METADATA_KEY, load_classifier_checkpoint, read_classifier_onnx_metadata
from mhyolo.deploy.onnx_file import trace_onnx, write_onnx_file
from mhyolo.errors import ConfigError, MhyoloError

INPUT_NAME = "crops"
OUTPUT_NAME = "probs"
OPSET = 18
FP32_ATOL = 1e-4
INT8_MIN_AGREEMENT = 0.9  # share of crops whose INT8 argmax equals PyTorch's
CHECK_CROPS = 64


@dataclass
class ClassifierExport:
    path: Path
    max_abs_diff: float  # probabilities against PyTorch on the check crops
    agreement: float  # share of check crops with the same argmax


class _Probabilities(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops).softmax(-1)


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer advises pre-processing through the root logger on every call; the
    check after it says what matters (the agreement with PyTorch)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _compare(path: Path, reference: np.ndarray, crops: torch.Tensor) -> tuple[float, float]:
    from mhyolo.classify.backend import OnnxClassifier

    got = OnnxClassifier(path, threads=1).probabilities(crops)
    return float(np.abs(got - reference).max()), float((got.argmax(1) == reference.argmax(1)).mean())


def export_classifier_onnx(weights: str | Path, out: str | Path, check_crops: torch.Tensor | None = None
                           ) -> ClassifierExport:
    """Write `weights` (a classifier `.safetensors`) as ONNX to `out` and check it against PyTorch."""
    checkpoint = load_classifier_checkpoint(weights)
    spec = checkpoint.spec
    wrapper = _Probabilities(checkpoint.net.cpu().float()).eval()
    size = spec.imgsz
    if check_crops is None:
        check_crops = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    crops = check_crops
    out = Path(out)
    proto = trace_onnx(wrapper, crops[:1], out, OPSET, INPUT_NAME, [OUTPUT_NAME],
                       {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    metadata = {**checkpoint.metadata, "exported_from": str(weights), "input": f"{INPUT_NAME} (B, 3, {size}, {size}) "
                "float32 RGB in [0, 1]", "output": f"{OUTPUT_NAME} (B, {len(spec.names)}) softmax"}
    write_onnx_file(proto, out, METADATA_KEY, json.dumps(metadata))
    with torch.no_grad():
        reference = wrapper(crops).numpy()
    diff, agreement = _compare(out, reference, crops)
    if not diff <= FP32_ATOL:
        out.unlink()
        raise MhyoloError(f"{out}: ONNX Runtime disagrees with PyTorch (max abs diff {diff:.3g} > {FP32_ATOL:g})")
    return ClassifierExport(out, diff, agreement)


def quantize_classifier(onnx_path: str | Path, out: str | Path, calibration: Sequence[torch.Tensor],
                        reference_weights: str | Path, check_crops: torch.Tensor,
                        reduce_range: bool | None = None) -> ClassifierExport:
    """INT8 (QDQ, per-channel weights, UInt8 activations, the softmax in float) calibrated on
    `calibration` crops (each (1, 3, S, S)); kept when its argmax agrees with PyTorch's on at least
    `INT8_MIN_AGREEMENT` of `check_crops`. The weights are 7-bit or 8-bit by the detector's rule:
    `reduce_range` None chooses them for this machine's CPU (`machine.ort_weight_range`)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from mhyolo.machine import cpu_info, ort_weight_range

    if reduce_range is None:
        chosen = ort_weight_range(cpu_info())
        reduce_range, range_reason = chosen.reduce_range, f"chosen for this CPU: {chosen.reason}"
    else:
        range_reason = f"{'7' if reduce_range else '8'}-bit weights as asked"
    onnx_path, out = Path(onnx_path), Path(out)
    if not calibration:
        raise ConfigError(f"{onnx_path}: no calibration crops to quantize with")
    metadata = read_classifier_onnx_metadata(onnx_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: np.ascontiguousarray(item.numpy(), dtype=np.float32)}

    proto = onnx.load(str(onnx_path))
    softmax = [node.name for node in proto.graph.node if node.op_type == "Softmax"]
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        raw = Path(tmp) / "int8.onnx"
        try:
            quantize_static(str(onnx_path), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=softmax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except Exception as exc:  # noqa: BLE001 - ORT raises many kinds; name the model
            raise MhyoloError(f"{onnx_path}: ONNX Runtime static quantization failed: {exc}") from exc
        quantized = onnx.load(str(raw))
    metadata = {**metadata, "quantization": {"precision": "int8", "tool": "onnxruntime", "format": "QDQ",
                                             "calibration_crops": len(calibration),
                                             "reduce_range": reduce_range, "weight_range": range_reason}}
    write_onnx_file(quantized, out, METADATA_KEY, json.dumps(metadata))
    reference = load_classifier_checkpoint(reference_weights).net.eval()
    with torch.no_grad():
        expected = reference(check_crops).softmax(-1).numpy()
    diff, agreement = _compare(out, expected, check_crops)
    if agreement < INT8_MIN_AGREEMENT:
        out.unlink()
        raise MhyoloError(f"{out}: the INT8 classifier agrees with PyTorch on {agreement:.0%} of the check crops "
                          f"(< {INT8_MIN_AGREEMENT:.0%})")
    return ClassifierExport(out, diff, agreement)


def check_and_calibration_crops(weights: str | Path, data: str | Path | None, calib_crops: int,
                                progress: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Crops to check an export on (the val split's, else random) and to calibrate INT8 on (the
    train split's, a seeded sample of `calib_crops`)."""
    from mhyolo.classify.checkpoint import read_classifier_metadata, spec_from_metadata
    from mhyolo.classify.data import split_crops
    from mhyolo.infer.crop_types import to_input
    from mhyolo.data.spec import load_data_spec

    spec = spec_from_metadata(read_classifier_metadata(weights), str(weights))
    if data is None:
        return torch.rand(8, 3, spec.imgsz, spec.imgsz, generator=torch.Generator().manual_seed(0)), []
    data_spec = load_data_spec(data)
    rng = np.random.default_rng(0)
    check = split_crops(data_spec, "val", spec.imgsz, spec.margin, progress)
    train = split_crops(data_spec, "train", spec.imgsz, spec.margin, progress)
    chosen = rng.choice(len(train), size=min(calib_crops, len(train)), replace=False)
    calibration = [torch.from_numpy(to_input(train.crops[i:i + 1])) for i in sorted(chosen)]
    return torch.from_numpy(to_input(check.crops[:CHECK_CROPS])), calibration


def export_checked(weights: Path, out: Path, data: str | Path | None = None, int8: bool = False,
                   calib_crops: int = 64) -> list[ClassifierExport]:
    """FP32 ONNX (and, with `int8`, `<out>_int8.onnx`), each checked against PyTorch."""
    check, calibration = check_and_calibration_crops(weights, data, calib_crops)
    done = [export_classifier_onnx(weights, out, check)]
    if int8:
        done.append(quantize_classifier(out, out.with_name(f"{out.stem}_int8.onnx"), calibration, weights, check))
    return done
