"""One `.onnx` file as mhyolo writes and reads it, for the detector (`deploy.onnx_export`) and the
crop classifier (`classify.export`) alike: a module traced into a graph, JSON metadata under one
key of `metadata_props`, the graph checked before it is written and written whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from mhyolo.errors import MhyoloError


def trace_onnx(module: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int, input_name: str,
               output_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]] | None = None):
    """`module` run on `sample` as an ONNX graph (TorchScript-based exporter), not written yet;
    `path` is the file it is meant for: the scratch file sits beside it and errors name it."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer chatter
            try:
                torch.onnx.export(module, (sample,), str(raw_path), dynamo=False, opset_version=opset,
                                  input_names=[input_name], output_names=list(output_names),
                                  dynamic_axes=dynamic_axes, do_constant_folding=True)
            except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; name the target
                raise MhyoloError(f"{path}: ONNX export failed (opset {opset}): {exc}") from exc
        return onnx.load(str(raw_path))


def write_onnx_file(proto, path: Path, key: str, value: str) -> None:
    """Store `value` under `key` in the model's metadata_props, check it, and write one file
    through a temporary name, so an interrupted write never leaves half a model at `path`."""
    import onnx

    for prop in list(proto.metadata_props):
        if prop.key == key:
            proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "mhyolo"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise MhyoloError(f"{path}: the exported graph is not valid ONNX: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates owner-only files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
