"""A model file as a runnable backend: the format table (`deploy.formats`) chooses the runtime by
suffix; `input_size` / `input_rule` say which input size a backend runs at.

`.pt` / `.safetensors` -> the PyTorch `YoloModel`; `.onnx` -> ONNX Runtime (or OpenVINO with
`runtime="openvino"`); `.xml` -> OpenVINO IR; `.rknn` -> the rknn-toolkit2 simulator (separate
environment, see `mhyolo.deploy.rknn`), or RKNN-Lite on a Rockchip board.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mhyolo.defaults import DEFAULT_IMGSZ
from mhyolo.deploy.formats import LoadOptions, check_input_size, load, runtimes

RUNTIMES = runtimes()


def load_backend(weights: str | Path, device: Any = "cpu", runtime: str | None = None,
                 precision: str | None = "auto", threads: int | None = None, npu_cores: str = "auto",
                 inference_only: bool = False):
    """Any supported model file as an `InferenceBackend` (PyTorch models in eval mode on `device`, in
    their inference form with `inference_only`; a `.rknn` on a Rockchip board's `npu_cores`), read by
    the row of its format (`deploy.formats`)."""
    return load(weights, runtime, LoadOptions(device=device, precision=precision, threads=threads,
                                              npu_cores=npu_cores, inference_only=inference_only))


def input_size(backend: Any, requested: int | None, default: int = DEFAULT_IMGSZ) -> int:
    """The network input size: what an exported (fixed-shape) model was exported for, else the
    requested size, else the size the model was trained at (a model knows only the object sizes
    it saw), else `default`; asking an exported model for another size is an error."""
    fixed = getattr(backend, "imgsz", None)
    if fixed is None:
        if requested is not None:
            return requested
        trained = getattr(backend, "trained_imgsz", None)
        return int(trained) if trained else default
    check_input_size(backend, requested)
    return int(fixed)


def input_rule(backend: Any, requested: int | str | None, default: int = DEFAULT_IMGSZ):
    """`input_size` for an `--imgsz` that may also be the word `native`: (the size, the
    `NativeSize` rule or None). The native rule never goes below that size (the model's own)."""
    from mhyolo.infer.input_size import NativeSize, split_imgsz

    size, native = split_imgsz(requested)
    imgsz = input_size(backend, size, default)
    return imgsz, (NativeSize.from_low(imgsz) if native else None)
