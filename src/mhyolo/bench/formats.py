"""The formats a model is benchmarked in: how each file is made and how it is run.

Each `Format` pairs a producer (weights -> a file in the output folder) with a
loader (file -> an `InferenceBackend`). Files are made once and found again by
name on the next run, and are written under a temporary name first, so an
interrupted conversion never leaves a half-written file that would be reused
(`make_once`, which the two-stage rows' classifier files go through too).
Producers of later formats ask `ModelFiles` for the files they start from (the
FP32 ONNX graph, the FP32 IR), which are then made once for all of them.
Deploy modules are imported inside the producers: a missing optional package or
a module not present in this build only skips the formats that need it.

A benchmark row is one way of running one file format of `mhyolo.deploy.formats` (FP32, BF16,
INT8...): `Format.file_format` names the row of that table whose runtime loads it, and file
sizes and the input-size check are the table's.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.deploy.formats import LoadOptions, file_format, file_size_mb
from mhyolo.deploy.formats import check_input_size as _check_input_size
from mhyolo.errors import ConfigError

OPENVINO_QUANT_MAX_DROP = 0.01  # accuracy-aware INT8: largest (typed) mAP50-95 loss it may accept


def make_once(target: Path, build: Callable[[Path], Path], what: str, say: Callable[[str], None]) -> Path:
    """`target`, reused when present, else built by `build(path)` in a temporary folder beside it
    and moved into place (companions such as an IR's `.bin` first, the file last), so an
    interrupted build never leaves a file that the next run would take for a finished one."""
    if target.is_file():
        say(f"reusing {target}")
        return target
    say(f"{what} -> {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        built = Path(build(Path(tmp) / target.name))
        if not built.is_file():
            raise FileNotFoundError(f"{what} reported {built} but did not write it")
        for companion in sorted(Path(tmp).iterdir()):  # e.g. weights .bin, sidecar .json, logs
            if companion == built:
                continue
            destination = target.parent / companion.name
            if destination.is_dir():
                shutil.rmtree(destination)
            elif destination.exists():
                destination.unlink()
            shutil.move(str(companion), destination)
        shutil.move(str(built), target)
    return target


@dataclass
class ModelFiles:
    """One model's converted files in `out`, made on first request and reused by name."""

    weights: Path
    out: Path
    imgsz: int
    data_yaml: Path
    threads: int | None = None
    calib_images: int = 50
    progress: bool = True
    unscored: str | None = None  # why accuracy is not measured (no dataset, classes that do not line up)
    classifier: Any = None  # `bench.two_stage.ClassifierFiles` of a two-stage model
    _model: Any = field(default=None, init=False, repr=False)
    _calibration: list[np.ndarray] | None = field(default=None, init=False, repr=False)

    @property
    def stem(self) -> str:
        return Path(self.weights).stem

    def say(self, message: str) -> None:
        if self.progress:
            print(f"    {message}", file=sys.stderr, flush=True)

    def model(self):
        """The PyTorch model (unfused: the exporter fuses its own copy), loaded once."""
        if self._model is None:
            from mhyolo.model.weights import load_model

            self._model = load_model(self.weights)
        return self._model

    def calibration(self) -> list[np.ndarray]:
        """Calibration inputs (1, 3, imgsz, imgsz) float32, drawn once for every INT8 format."""
        if self._calibration is None:
            from mhyolo.deploy.calibration import calibration_batches

            self.say(f"reading {self.calib_images} calibration images from {self.data_yaml}")
            self._calibration = calibration_batches(self.data_yaml, self.imgsz, count=self.calib_images, seed=0,
                                                    progress=self.progress)
        return self._calibration

    def make(self, relative: str, build: Callable[[Path], Path], what: str) -> Path:
        """`out/relative`, made once (`make_once`)."""
        return make_once(self.out / relative, build, what, self.say)

    # ------------------------------------------------------------- shared bases
    def onnx(self) -> Path:
        from mhyolo.deploy.onnx_export import export_onnx

        return self.make(f"{self.stem}.onnx", lambda t: export_onnx(self.model(), t, imgsz=self.imgsz).path,
                         f"exporting ONNX at {self.imgsz}")

    def openvino(self) -> Path:
        onnx_path = self.onnx()
        convert = file_format("openvino").convert
        return self.make(f"{self.stem}_openvino/{self.stem}.xml", lambda t: convert(onnx_path, t),
                         "converting to OpenVINO IR (FP32)")


@dataclass(frozen=True)
class Format:
    """One row kind of the benchmark: a producer, a loader and whether latency means anything."""

    key: str
    title: str
    file_format: str  # the row of `deploy.formats` whose file this row makes and runs
    produce: Callable[[ModelFiles], Path]
    load: Callable[[ModelFiles, Path], tuple[Any, str]]  # (backend, note for the table)
    timed: bool = True
    untimed_note: str = ""


def check_input_size(backend: Any, imgsz: int) -> None:
    """A reused file exported at another size must not be scored at this one."""
    _check_input_size(backend, imgsz, remedy="delete it or use another --out folder", made="made")


def _load(key: str, files: ModelFiles, path: Path, precision: str | None = "auto") -> Any:
    """`path` in the runtime of the file format `key`."""
    return file_format(key).load(path, LoadOptions(precision=precision, threads=files.threads))


# ----------------------------------------------------------------- producers
def _weights_file(files: ModelFiles) -> Path:
    from mhyolo.model.weights import resolve_weights

    return resolve_weights(files.weights)


def _onnx_int8(files: ModelFiles) -> Path:
    from mhyolo.deploy.quantize_ort import quantize_onnx_static

    onnx_path = files.onnx()
    return files.make(f"{files.stem}_int8.onnx",
                      lambda t: quantize_onnx_static(onnx_path, t, files.calibration(), per_channel=True),
                      "quantizing with ONNX Runtime (static INT8, per channel)")


def _openvino_int8(mode: str) -> Callable[[ModelFiles], Path]:
    def produce(files: ModelFiles) -> Path:
        from mhyolo.infer.onnx_metadata import read_onnx_metadata
        from mhyolo.deploy.quantize_openvino import accuracy_target, quantize_openvino

        if mode == "accuracy" and files.unscored:
            raise ConfigError(f"accuracy-aware INT8 needs a dataset the model can be scored on ({files.unscored})")
        fp32 = files.openvino()
        folder = "openvino_int8" if mode == "default" else "openvino_int8_acc"
        kwargs: dict[str, Any] = {"mode": mode}
        if mode == "accuracy":  # the drop NNCF bounds is measured with our validation
            target = accuracy_target(files.data_yaml, read_onnx_metadata(files.onnx()))
            kwargs.update(validate_fn=target.fn, validation_data=target.items, max_drop=OPENVINO_QUANT_MAX_DROP)
        return files.make(f"{files.stem}_{folder}/{files.stem}.xml",
                          lambda t: quantize_openvino(fp32, t, files.calibration(), **kwargs),
                          f"quantizing with OpenVINO NNCF (INT8, {mode})")
    return produce


def _rknn(files: ModelFiles) -> Path:
    from mhyolo.deploy.rknn import convert_rknn

    onnx_path = files.onnx()
    return files.make(f"{files.stem}.rknn",
                      lambda t: convert_rknn(onnx_path, t, files.data_yaml, calib_images=files.calib_images, seed=0),
                      "converting to RKNN (INT8)")


# ------------------------------------------------------------------- loaders
def _load_torch(files: ModelFiles, path: Path) -> tuple[Any, str]:
    return _load("torch", files, path).fuse(), "BatchNorm fused"


def _load_ort(files: ModelFiles, path: Path) -> tuple[Any, str]:
    return _load("onnx", files, path), ""


def _load_ort_int8(files: ModelFiles, path: Path) -> tuple[Any, str]:
    backend, _ = _load_ort(files, path)
    quant = backend.metadata.extra.get("quantization", {})
    blocks = [b["block"] for b in quant.get("float_blocks", [])]
    bits = "7-bit" if quant.get("reduce_range", True) else "8-bit"
    note = f"{bits} weights; box convs float"
    if blocks:
        note += f"; float blocks (SQNR < {quant['min_sqnr_db']:g} dB): {', '.join(blocks)}"
    return backend, note


def _load_openvino(precision: str) -> Callable[[ModelFiles, Path], tuple[Any, str]]:
    def load(files: ModelFiles, path: Path) -> tuple[Any, str]:
        backend = _load("openvino", files, path, precision)
        notes = [_precision_note(backend, precision)]
        if backend.quantized:  # what actually ran: INT8 only pays where the convolutions are INT8 kernels
            notes.append(backend.kernels().describe())
        return backend, "; ".join(n for n in notes if n)
    return load


def _precision_note(backend: Any, requested: str) -> str:
    """Says so when the CPU cannot run the requested precision and OpenVINO fell back, and which
    precision the float layers of an INT8 model run in when the plugin chose it ("auto")."""
    try:
        hint = backend.compiled.get_property("INFERENCE_PRECISION_HINT")
        actual = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint).lower()
    except Exception:  # noqa: BLE001 - older plugins may not report it; then there is nothing to say
        return ""
    if requested == "auto":
        return f"float layers {actual} (plugin default)" if backend.quantized else ""
    if actual == requested:
        return ""
    return f"no {requested} on this CPU: ran {actual}"


def _load_int8_acc(files: ModelFiles, path: Path) -> tuple[Any, str]:
    backend, note = _load_openvino("auto")(files, path)
    tuned = f"float layers chosen on the val split it is scored on (max drop {OPENVINO_QUANT_MAX_DROP})"
    return backend, "; ".join(n for n in (note, tuned) if n)


def _load_rknn(files: ModelFiles, path: Path) -> tuple[Any, str]:
    return _load("rknn", files, path), ""


FORMATS: dict[str, Format] = {f.key: f for f in (
    Format("torch", "PyTorch FP32", "torch", _weights_file, _load_torch),
    Format("onnx", "ONNX Runtime FP32", "onnx", lambda files: files.onnx(), _load_ort),
    Format("onnx-int8", "ONNX Runtime INT8", "onnx", _onnx_int8, _load_ort_int8),
    Format("openvino", "OpenVINO FP32", "openvino", lambda files: files.openvino(), _load_openvino("f32")),
    Format("openvino-bf16", "OpenVINO BF16", "openvino", lambda files: files.openvino(), _load_openvino("bf16")),
    Format("openvino-int8", "OpenVINO INT8", "openvino", _openvino_int8("default"), _load_openvino("auto")),
    Format("openvino-int8-acc", "OpenVINO INT8 acc.-aware", "openvino", _openvino_int8("accuracy"), _load_int8_acc),
    Format("rknn-int8", "RKNN INT8", "rknn", _rknn, _load_rknn, timed=False, untimed_note="n/a (simulator)"),
)}
DETECTOR_FORMATS = ("torch", "onnx")  # what --detector adds, for the heads' overhead from one run
