"""A `.rknn` on a Rockchip board's NPU through rknn-toolkit-lite2 (`rknnlite.api.RKNNLite`).

On the board the converted file runs as it is (no rebuild, unlike the x86 simulator); what it
needs besides is the sidecar `convert_rknn` wrote beside it (`model.rknn.json`: class and type
names, anchors, strides, input size), so copy both. The input is what the simulator gets, the
letterboxed uint8 RGB NHWC image (the model divides by 255 itself, `rknn_env.to_worker_input`), and
the outputs come back in the graph's order (`ExportMetadata.output_names`), so the predictor's
letterbox, decoding, NMS and types are the very ones every other runtime uses.

`--npu-cores` picks the NPU cores of an RK3588 (`auto`: the driver's choice; `0`, `1`, `2`: one
core; `all`: the three together for one model call). `load_backend` uses this backend for a
`.rknn` on an ARM machine where `rknnlite` imports, and the simulator elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.deploy.rknn import sidecar_metadata
from mhyolo.deploy.rknn_env import to_worker_input
from mhyolo.defaults import NPU_CORE_WORDS
from mhyolo.errors import ConfigError, MhyoloError, WeightsError
from mhyolo.infer.backends.base import ExportedBackend

# `--npu-cores` word -> the `RKNNLite` core-mask attribute
NPU_CORES = dict(zip(NPU_CORE_WORDS, ("NPU_CORE_AUTO", "NPU_CORE_0", "NPU_CORE_1", "NPU_CORE_2", "NPU_CORE_0_1_2"),
                     strict=True))
ARM_MACHINES = ("aarch64", "arm64", "armv8l", "armv7l")


def on_board() -> bool:
    """An ARM machine with rknn-toolkit-lite2 installed: run `.rknn` files on its NPU."""
    return platform.machine().lower() in ARM_MACHINES and importlib.util.find_spec("rknnlite") is not None


def core_mask(api: Any, cores: str) -> Any:
    """The `RKNNLite` core mask for an `--npu-cores` word; a clear error for any other word."""
    word = str(cores).strip().lower()
    if word not in NPU_CORES:
        raise ConfigError(f"--npu-cores {cores!r}: choose one of {', '.join(NPU_CORES)}")
    return getattr(api.RKNNLite, NPU_CORES[word])


def _checked(ret: Any, step: str, path: Path) -> None:
    if ret != 0:
        raise MhyoloError(f"{path}: RKNNLite {step} failed (returned {ret})")


class RknnLiteBackend(ExportedBackend):
    """A `.rknn` file on the board's NPU (an `InferenceBackend`). `api` is the `rknnlite.api` module
    (imported when not given)."""

    def __init__(self, path: str | Path, npu_cores: str = "auto", api: Any = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"model file not found: {path}")
        if path.suffix.lower() != ".rknn":
            raise ConfigError(f"{path}: RKNN-Lite runs a .rknn converted for the board's NPU")
        super().__init__(path, sidecar_metadata(path))
        api = api if api is not None else importlib.import_module("rknnlite.api")
        mask = core_mask(api, npu_cores)
        self.npu_cores = str(npu_cores).strip().lower()
        self.output_names = self.metadata.output_names
        self.runtime: Any = api.RKNNLite(verbose=False)
        try:
            _checked(self.runtime.load_rknn(str(path)), "load_rknn", path)
            _checked(self.runtime.init_runtime(core_mask=mask), f"init_runtime (NPU cores {self.npu_cores})", path)
        except BaseException:
            self.close()
            raise

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.runtime is None:
            raise MhyoloError(f"{self.path}: the RKNN-Lite runtime was released")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for image in to_worker_input(batch):  # the NPU graph takes one image per call
            outputs = self.runtime.inference(inputs=[np.ascontiguousarray(image[None])], data_format="nhwc")
            if outputs is None or len(outputs) != len(self.output_names):
                got = "nothing" if outputs is None else f"{len(outputs)} outputs"
                raise MhyoloError(f"{self.path}: RKNN-Lite returned {got}, expected {len(self.output_names)} "
                                  f"({', '.join(self.output_names)})")
            for name, value in zip(self.output_names, outputs):
                parts[name].append(np.asarray(value, dtype=np.float32))
        return {name: np.concatenate(values) for name, values in parts.items()}

    def close(self) -> None:
        """Release the NPU context."""
        if getattr(self, "runtime", None) is not None:
            self.runtime.release()
            self.runtime = None

    def __del__(self) -> None:
        self.close()
