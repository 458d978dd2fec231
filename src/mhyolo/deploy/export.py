"""Export a model and prove the file agrees with PyTorch, in one call.

The command line and the Python API both export through here, so an exported file is never
handed back without having been run in its runtime and compared output by output and
detection by detection. A simplified (onnxslim) graph that fails the check is replaced by
the plain export, checked again; a file that still disagrees is an error.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mhyolo.deploy.formats import LoadOptions, export_formats, file_format, file_size_mb
from mhyolo.errors import ConfigError, MhyoloError

if TYPE_CHECKING:  # the command line imports this module to list the formats: keep it light
    import numpy as np

    from mhyolo.deploy.check import ExportCheck

EXPORT_FORMATS = export_formats()  # the rows of `deploy.formats` with an `export_target`


@dataclass
class CheckedExport:
    path: Path  # the .onnx, or the OpenVINO .xml (its .bin beside it)
    check: ExportCheck
    simplified: bool
    runtime: str  # the runtime it was checked in
    imgsz: int

    @property
    def size_mb(self) -> float:
        return file_size_mb(self.path)


def default_target(stem: str, fmt: str, out: Path | None = None) -> Path:
    """The file to write: `out` (for openvino a .xml, or a folder for model.xml), else under runs/export/."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    return file_format(fmt).export_target(stem, out)


def _runtime(path: Path, fmt: str):
    """The written file in its format's runtime, in full precision (what the check compares)."""
    return file_format(fmt).load(path, LoadOptions(precision="f32"))


def export_checked(model, target: Path, fmt: str, imgsz: int, images: Sequence[np.ndarray], opset: int = 18,
                   dynamic_batch: bool = False, simplify: bool = True) -> CheckedExport:
    """Write `model` to `target` in `fmt` and check it against PyTorch on `images` (BGR);
    raises `MhyoloError` with the comparison table when the runtime disagrees."""
    import torch

    from mhyolo.deploy.check import check_backend
    from mhyolo.deploy.onnx_export import export_onnx

    target = Path(target)
    convert = file_format(fmt).convert  # None: the ONNX file is the format
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        onnx_path = target if convert is None else Path(tmp) / "model.onnx"  # an intermediate for the others

        def write(simplified: bool):
            result = export_onnx(model, onnx_path, imgsz=imgsz, opset=opset, dynamic_batch=dynamic_batch,
                                 simplify=simplified)
            final = onnx_path if convert is None else convert(onnx_path, target)
            backend = _runtime(final, fmt)
            return result, final, backend, check_backend(model, backend, images)

        result, final, backend, check = write(simplify)
        if not check.ok and result.simplified:
            print("the simplified graph failed the check; exporting without onnxslim", file=sys.stderr)
            result, final, backend, check = write(False)
    runtime = type(backend).__name__
    if not check.ok:
        raise MhyoloError(f"{final}: {runtime} disagrees with PyTorch: {'; '.join(check.problems[:5])}\n"
                          f"{check.table()}")
    return CheckedExport(path=final, check=check, simplified=result.simplified, runtime=runtime, imgsz=imgsz)


def convert_onnx_checked(onnx_path: Path, target: Path, images: Sequence[np.ndarray],
                         fmt: str = "openvino") -> CheckedExport:
    """An exported `.onnx` converted to `fmt` (OpenVINO IR) and checked against ONNX Runtime on `images`
    (no PyTorch model is needed: the ONNX file is the reference); raises `MhyoloError` when they disagree."""
    from mhyolo.deploy.check import check_against_runtime

    onnx_path, target = Path(onnx_path), Path(target)
    if not onnx_path.is_file():
        raise ConfigError(f"{onnx_path}: no such ONNX file")
    reference = _runtime(onnx_path, "onnx")
    final = file_format(fmt).convert(onnx_path, target)
    backend = _runtime(final, fmt)
    check = check_against_runtime(reference, backend, images)
    runtime = type(backend).__name__
    if not check.ok:
        raise MhyoloError(f"{final}: {runtime} disagrees with ONNX Runtime on {onnx_path}: "
                          f"{'; '.join(check.problems[:5])}\n{check.table()}")
    return CheckedExport(path=final, check=check, simplified=False, runtime=runtime, imgsz=backend.imgsz)
