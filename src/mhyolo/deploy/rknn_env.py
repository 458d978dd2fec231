"""The rknn-toolkit2 environment and the worker process that runs in it.

rknn-toolkit2 pins numpy <= 1.26.4, onnx <= 1.18 and protobuf 4.x, so it lives in an
environment of its own (`make rknn-env` -> `.venv-rknn`); mhyolo talks to `rknn_worker.py`
there over pipes (a JSON header line, then an npz payload, each way).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.errors import ConfigError, MhyoloError
from mhyolo.paths import repo_root

ENV_VARIABLE = "MHYOLO_RKNN_PYTHON"
VENV_NAME = ".venv-rknn"
WORKER_FILE = Path(__file__).with_name("rknn_worker.py")
_LOG_TAIL = 3000  # characters of the worker log quoted in an error


def find_rknn_python() -> Path:
    """The python of the rknn-toolkit2 environment: `$MHYOLO_RKNN_PYTHON`, else
    `.venv-rknn/bin/python` in the checkout; a clear error when neither exists."""
    env = os.environ.get(ENV_VARIABLE)
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MhyoloError(f"${ENV_VARIABLE} is {env}, which is not an executable python; point it at the "
                              f"rknn-toolkit2 environment's python or unset it and run `make rknn-env`")
        return path
    path = repo_root() / VENV_NAME / "bin" / "python"
    if path.is_file():
        return path
    raise MhyoloError(f"RKNN needs the separate rknn-toolkit2 environment, not found at {path.parent.parent}: "
                      f"create it with `make rknn-env` in {repo_root()} (or set ${ENV_VARIABLE} to the python "
                      f"of an environment that has rknn-toolkit2==2.5.0)")


def to_worker_input(x: Any) -> np.ndarray:
    """The predictor's float RGB NCHW batch in [0, 1] -> uint8 RGB NHWC, the bytes the
    converted model expects (it scales by 1/255 itself). Exact for images that were uint8."""
    array = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ConfigError(f"expected a (B, 3, H, W) RGB batch, got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        pixels = array
    else:
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise ConfigError(f"expected float pixels in [0, 1], got values in [{low:.3g}, {high:.3g}]: "
                              f"the backend takes the predictor's scaled input, not raw 0-255 floats")
        pixels = np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


class RknnWorker:
    """A `rknn_worker.py` process in the RKNN environment; its log goes to a file that
    errors quote. Use as a context manager or call `close()`."""

    def __init__(self, python: Path | None = None, log_path: Path | None = None) -> None:
        self.python = python or find_rknn_python()
        self._own_dir = None
        if log_path is None:
            self._own_dir = tempfile.mkdtemp(prefix="mhyolo-rknn-")
            log_path = Path(self._own_dir) / "worker.log"
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([str(self.python), str(WORKER_FILE)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, env=env)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL:]
        except OSError:
            return ""

    def request(self, command: str, arrays: dict[str, np.ndarray] | None = None,
                **fields: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one command, wait for its answer; a failure raises with the worker's log."""
        payload = b""
        if arrays:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            payload = buffer.getvalue()
        header = json.dumps(dict(fields, cmd=command, nbytes=len(payload))).encode() + b"\n"
        try:
            self.process.stdin.write(header + payload)
            self.process.stdin.flush()
            line = self.process.stdout.readline()
            if not line:
                raise EOFError
            reply = json.loads(line)
            data = self.process.stdout.read(int(reply.get("nbytes", 0))) if reply.get("nbytes") else b""
        except (BrokenPipeError, EOFError, json.JSONDecodeError) as exc:
            raise MhyoloError(f"the RKNN worker ({self.python}) stopped during '{command}' "
                              f"(exit code {self.process.poll()}); its log {self.log_path} ends with:\n"
                              f"{self.log_tail()}") from exc
        if not reply.get("ok"):
            raise MhyoloError(f"RKNN '{command}' failed: {reply.get('error')}; log {self.log_path}:\n"
                              f"{self.log_tail()}")
        out = dict(np.load(io.BytesIO(data))) if data else {}
        return reply, out

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request("quit")
            except MhyoloError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()
        self._log.close()
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> RknnWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
