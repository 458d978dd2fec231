"""OpenVINO (CPU) as an `InferenceBackend`, for an exported `.onnx` or an IR `.xml`.

The CPU plugin may run in bf16 where the processor supports it; `precision="f32"`
pins full precision (what accuracy checks against PyTorch need), `None` keeps the
plugin's default. `"auto"` (what `load_backend` uses) is f32 for a float IR and the
plugin's default for an INT8 one: there the float hint would also keep the few layers
left float (the box convolutions, the output sigmoids) in f32 instead of bf16 on CPUs
with bf16 arithmetic, and measured on the ball model the default loses nothing
(docs/results/int8_cpu.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mhyolo.infer.layout import METADATA_KEY, ExportMetadata
from mhyolo.infer.onnx_metadata import read_onnx_metadata
from mhyolo.defaults import OPENVINO_PRECISIONS
from mhyolo.errors import ConfigError, MhyoloError
from mhyolo.infer.backends.base import ExportedBackend

PRECISIONS = OPENVINO_PRECISIONS


def is_quantized(model) -> bool:
    """An INT8 IR: NNCF left FakeQuantize nodes for the plugin to fold into INT8 kernels."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def _ir_metadata(model, path: Path) -> ExportMetadata:
    if not model.has_rt_info([METADATA_KEY]):
        raise MhyoloError(f"{path}: an OpenVINO IR without '{METADATA_KEY}' metadata: not written by mhyolo export")
    return ExportMetadata.from_json(model.get_rt_info([METADATA_KEY]).astype(str), str(path))


class OpenVinoBackend(ExportedBackend):
    """Runs an exported model with OpenVINO on the CPU."""

    throughput = "openvino"  # its own asynchronous infer requests

    def __init__(self, path: str | Path, precision: str | None = "f32", threads: int | None = None,
                 device: str = "CPU") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise MhyoloError("running OpenVINO models needs 'openvino' (pip install 'mhyolo[openvino]')") from exc
        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)} or None, got {precision!r}")
        path = Path(path)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises generic RuntimeErrors
            raise MhyoloError(f"{path}: OpenVINO cannot read it: {exc}") from exc
        meta = read_onnx_metadata(path) if path.suffix == ".onnx" else _ir_metadata(model, path)
        super().__init__(path, meta)
        self.quantized = is_quantized(model)
        if precision == "auto":
            precision = None if self.quantized else "f32"
        config: dict[str, object] = {}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = precision
        self.core, self.model, self.device, self.config = core, model, device, config
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        missing = set(meta.output_names) - set(self.output_names)
        if missing:
            raise MhyoloError(f"{path}: graph lacks outputs {', '.join(sorted(missing))} named in its metadata")

    def kernels(self):
        """The convolution kernels the plugin runs (`deploy.openvino_kernels.KernelSummary`)."""
        from mhyolo.infer.backends.openvino_kernels import executed_kernels

        return executed_kernels(self.compiled)

    def compile_for_throughput(self, streams: int | None = None):
        """The same model compiled for many frames at once (the throughput hint: the cores split into
        streams, one request each), same precision and threads; `streams` fixes their number."""
        config = {**self.config, "PERFORMANCE_HINT": "THROUGHPUT"}
        if streams:
            config["NUM_STREAMS"] = int(streams)
        return self.core.compile_model(self.model, self.device, config)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self.request.infer({self.metadata.input_name: batch})
        return {name: np.array(result[self.compiled.output(name)]) for name in self.output_names}
