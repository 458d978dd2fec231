"""ONNX Runtime (CPU) as an `InferenceBackend` for `.onnx` files from `mhyolo export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.infer.onnx_metadata import metadata_from_props
from mhyolo.errors import MhyoloError
from mhyolo.infer.backends.base import ExportedBackend


def cpu_session(path: Path, threads: int | None = None) -> Any:
    """An `onnxruntime.InferenceSession` of `path` on the CPU provider, `threads` intra-op threads
    (ONNX Runtime's default when None), for detectors and crop classifiers alike.

    Its worker threads do not spin-wait after a call: spinning keeps the cores busy for a
    while, which slows whatever runs next in the process (measured here: a PyTorch call
    right after an ORT call took 45.6 ms instead of 21.2 ms) and so skews every interleaved
    benchmark; without it the ORT call itself was not slower (13.6 against 16.4 ms).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MhyoloError("running .onnx files needs 'onnxruntime' (pip install 'mhyolo[onnxruntime]')") from exc
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise MhyoloError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc


class OnnxRuntimeBackend(ExportedBackend):
    """Runs an exported `.onnx` with ONNX Runtime's CPU provider (`cpu_session`)."""

    throughput = "threads"  # sessions may be called from several threads at once

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        session = cpu_session(path, threads)  # its model metadata holds ours: no second read of the file
        super().__init__(path, metadata_from_props(dict(session.get_modelmeta().custom_metadata_map), path))
        self.session = session
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = set(self.metadata.output_names) - set(self.output_names)
        if missing:
            raise MhyoloError(f"{path}: graph lacks outputs {', '.join(sorted(missing))} named in its metadata")

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.metadata.input_name: batch})
        return dict(zip(self.output_names, values))
