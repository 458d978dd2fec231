"""The half of the RKNN support that runs inside the rknn-toolkit2 environment (`make rknn-env`).

rknn-toolkit2 pins numpy, onnx and protobuf to versions the main environment cannot
use, so `mhyolo.deploy.rknn` starts this file as a subprocess with the RKNN
environment's python. It must therefore import only the standard library, numpy and
`rknn` (never mhyolo or torch).

Why the simulator rebuilds: on x86 the toolkit only simulates a model built in the
same session (`load_rknn` + `init_runtime()` without a board fails), so a worker is
handed the ONNX file and the same calibration list the `.rknn` was built from, builds
again (deterministically) and then answers inference requests.

Protocol (one request at a time, the worker is long-lived):
  request  = one JSON line {"cmd": ..., "nbytes": N, ...} on stdin, then N bytes of .npz
  response = one JSON line {"ok": bool, "nbytes": N, ...} on the protocol stream, then N bytes
Commands: "build" (config + load_onnx + build, optional export_rknn and accuracy_analysis,
then init_runtime on the simulator), "infer" (npz "images": (B, H, W, 3) uint8 RGB -> npz
of named outputs concatenated over the batch), "quit".
The toolkit prints to file descriptor 1 from C code, so the worker moves fd 1 to
stderr first and answers on a duplicate of the original stdout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
import traceback
from typing import Any, BinaryIO

import numpy as np

# Run as a script, this file's folder comes first on sys.path, where mhyolo's own
# `rknn.py` would shadow the toolkit's `rknn` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _protocol_streams() -> tuple[BinaryIO, BinaryIO]:
    """stdin for requests, and the original stdout for answers; fd 1 then points at stderr."""
    answer = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin.buffer, answer


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the parent closed the request stream")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send(stream: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    payload = b""
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
    header = dict(header, nbytes=len(payload))
    stream.write(json.dumps(header).encode() + b"\n" + payload)
    stream.flush()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(ret: int, step: str) -> None:
    if ret != 0:
        raise RuntimeError(f"rknn {step} failed (return code {ret}); see the worker log above")


class Worker:
    """One RKNN session: built once, then used for any number of inferences."""

    def __init__(self) -> None:
        self.rknn = None
        self.output_names: list[str] = []

    def build(self, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
        from rknn.api import RKNN

        started = time.perf_counter()
        rknn = RKNN(verbose=bool(request.get("verbose", False)))
        size = int(request["imgsz"])
        _check(rknn.config(mean_values=[request["mean"]], std_values=[request["std"]],
                           target_platform=request["target"], quantized_dtype=request["quantized_dtype"],
                           quantized_algorithm=request["quantized_algorithm"],
                           quantized_method=request["quantized_method"],
                           optimization_level=int(request["optimization_level"])), "config")
        if request.get("dynamic_batch"):  # the NPU graph is static: fix the batch at 1
            _check(rknn.load_onnx(model=request["onnx"], inputs=[request["input_name"]],
                                  input_size_list=[[1, 3, size, size]]), "load_onnx")
        else:
            _check(rknn.load_onnx(model=request["onnx"]), "load_onnx")
        _check(rknn.build(do_quantization=True, dataset=request["dataset"]), "build")
        reply: dict[str, Any] = {"build_seconds": time.perf_counter() - started}
        if request.get("export"):
            _check(rknn.export_rknn(request["export"]), "export_rknn")
            reply["rknn_sha256"] = _sha256(request["export"])
            reply["rknn_bytes"] = os.path.getsize(request["export"])
        if request.get("analysis_input"):
            started = time.perf_counter()
            _check(rknn.accuracy_analysis(inputs=[request["analysis_input"]], output_dir=request["analysis_dir"]),
                   "accuracy_analysis")
            reply["analysis_seconds"] = time.perf_counter() - started
        _check(rknn.init_runtime(), "init_runtime (simulator)")
        self.rknn = rknn
        self.output_names = list(request["output_names"])
        return reply, None

    def infer(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.rknn is None:
            raise RuntimeError("infer before build: the simulator has no model yet")
        images = arrays["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8 RGB images, got {images.dtype} {images.shape}")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for image in images:
            outputs = self.rknn.inference(inputs=[np.ascontiguousarray(image[None])], data_format="nhwc")
            if outputs is None or len(outputs) != len(self.output_names):
                got = "nothing" if outputs is None else f"{len(outputs)} outputs"
                raise RuntimeError(f"the simulator returned {got}, expected {len(self.output_names)}")
            for name, value in zip(self.output_names, outputs):
                parts[name].append(np.asarray(value, dtype=np.float32))
        return {}, {name: np.concatenate(values) for name, values in parts.items()}

    def close(self) -> None:
        if self.rknn is not None:
            self.rknn.release()
            self.rknn = None


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until "quit" or end of input; an error is answered, not fatal."""
    worker = Worker()
    try:
        while True:
            line = requests.readline()
            if not line:
                return
            request = json.loads(line)
            payload = _read_exact(requests, int(request.get("nbytes", 0)))
            arrays = dict(np.load(io.BytesIO(payload))) if payload else {}
            command = request.get("cmd")
            if command == "quit":
                _send(answers, {"ok": True})
                return
            try:
                if command == "build":
                    header, out = worker.build(request)
                elif command == "infer":
                    header, out = worker.infer(arrays)
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                traceback.print_exc(file=sys.stderr)
                _send(answers, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                continue
            _send(answers, dict(header, ok=True), out)
    finally:
        worker.close()


def main() -> int:
    requests, answers = _protocol_streams()
    serve(requests, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
