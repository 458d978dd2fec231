"""The model file formats, one row each: what every command that writes, reads or quantizes a
model file asks about a format.

A row (`FileFormat`) says the format's key, the suffix of its file and of the files that
belong with it (an OpenVINO IR's `.bin`), whether its input size is fixed at export, and
how to make, read and quantize it: `load` (the file as an `InferenceBackend`), `convert`
(from the exported ONNX graph), `export_target` (where `mhyolo export` writes it),
`quantize` (an INT8 file of this format from an exported model) and `metadata` (its
`ExportMetadata`). A new format is one row registered with `register_format`; `load_backend`,
`mhyolo export`, `mhyolo quantize`, the benchmark and the throughput mode read the table.

Runtimes, converters and quantizers are imported inside the callables, so importing the table
costs nothing and a missing optional package only fails the format that needs it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mhyolo.defaults import NPU_CORE_WORDS
from mhyolo.errors import ConfigError, MhyoloError, WeightsError

if TYPE_CHECKING:
    from mhyolo.infer.layout import ExportMetadata


@dataclass(frozen=True)
class LoadOptions:
    """How to run a file: the torch device, the OpenVINO precision, the CPU threads, on a Rockchip
    board the NPU cores (`NPU_CORE_WORDS`), and whether the model is only run (`inference_only`: a
    PyTorch model then takes its faster inference form, `YoloModel.for_inference`)."""

    device: Any = "cpu"
    precision: str | None = "auto"
    threads: int | None = None
    npu_cores: str = "auto"
    inference_only: bool = False

    def __post_init__(self) -> None:
        if str(self.npu_cores).strip().lower() not in NPU_CORE_WORDS:
            raise ConfigError(f"--npu-cores {self.npu_cores!r}: choose one of {', '.join(NPU_CORE_WORDS)}")


@dataclass(frozen=True)
class QuantizeJob:
    """An INT8 model to write: `out` from the exported `weights`, calibrated on `calib`'s train split.
    Format-specific settings are read only by the quantizer they belong to."""

    weights: Path
    out: Path
    calib: Path
    calib_images: int = 50
    seed: int = 0
    split: str = "val"
    method: str = "minmax"  # ONNX Runtime's calibration
    reduce_range: bool | None = None  # ONNX Runtime: 7-bit weights; None: chosen for this CPU
    min_sqnr_db: float | None = None
    float_blocks: tuple[str, ...] = ()
    mode: str = "default"  # OpenVINO/NNCF: default or accuracy-aware
    max_drop: float = 0.01
    input: str = "uint8"  # OpenVINO: what the INT8 IR takes
    target: str = "rk3588"  # RKNN target platform


Loader = Callable[[Any, LoadOptions], Any]
Quantizer = Callable[[QuantizeJob, "ExportMetadata"], dict[str, Any]]


@dataclass(frozen=True)
class FileFormat:
    """One model file format."""

    key: str  # the name commands and the table use (`--format`, a benchmark row's file)
    title: str
    suffixes: tuple[str, ...]  # file suffixes, lower case; the first is what it writes
    load: Loader  # (the file as given, options) -> an `InferenceBackend`
    companions: tuple[str, ...] = ()  # suffixes of the files beside it that are part of the model
    fixed_size: bool = True  # the input size is fixed when the file is made
    runtime: str | None = None  # name of the runtime behind `load` when callers may choose it (`runtime=`)
    runs: tuple[str, ...] = ()  # other formats' suffixes that runtime also runs (OpenVINO: an .onnx)
    metadata: Callable[[Path], ExportMetadata] | None = None
    convert: Callable[[Path, Path], Path] | None = None  # (exported .onnx, target) -> the written file
    export_target: Callable[[str, Path | None], Path] | None = None  # `mhyolo export`: (stem, --out) -> file
    quantizer: str | None = None  # the `--backend` of `mhyolo quantize` that writes this format
    quantize: Quantizer | None = None  # job -> what the report says about how it was made
    quantizes_from: tuple[str, ...] = (".onnx",)  # suffixes the quantizer reads
    reference: str = "onnx"  # the format whose runtime scores the FP32 model a quantized file is compared with
    fallback: bool = False  # the format of any file no other row claims (weights, shipped names)
    aliases: tuple[str, ...] = field(default=())  # other names of the format


FORMATS: dict[str, FileFormat] = {}


def register_format(row: FileFormat) -> FileFormat:
    """Make `row` known to every command; keys, aliases and suffixes must be new."""
    names = (row.key, *row.aliases)
    for other in FORMATS.values():
        taken = set(names) & {other.key, *other.aliases}
        if taken:
            raise ValueError(f"file format name {', '.join(sorted(taken))} is registered twice")
        shared = set(row.suffixes) & set(other.suffixes)
        if shared:
            raise ValueError(f"suffix {', '.join(sorted(shared))} of '{row.key}' is already '{other.key}'s")
    if row.fallback and any(other.fallback for other in FORMATS.values()):
        raise ValueError("only one file format may be the fallback")
    FORMATS[row.key] = row
    return row


def unregister_format(key: str) -> None:
    """Forget a format (tests register throwaway ones)."""
    FORMATS.pop(key, None)


def file_format(name: str) -> FileFormat:
    """The row named `name` (its key or an alias)."""
    for row in FORMATS.values():
        if name == row.key or name in row.aliases:
            return row
    raise ConfigError(f"unknown file format {name!r}; known: {', '.join(FORMATS)}")


def format_of_file(path: str | Path) -> FileFormat:
    """The row of a file, by its suffix; the fallback row (PyTorch weights) for any other name."""
    suffix = Path(path).suffix.lower()
    for row in FORMATS.values():
        if suffix in row.suffixes:
            return row
    for row in FORMATS.values():
        if row.fallback:
            return row
    raise ConfigError(f"{path}: no file format reads '{suffix}' files")


def runtimes() -> tuple[str, ...]:
    """The runtimes a caller may choose (`load_backend(runtime=...)`), in table order."""
    return tuple(row.runtime for row in FORMATS.values() if row.runtime)


def export_formats() -> tuple[str, ...]:
    """What `mhyolo export --format` writes."""
    return tuple(row.key for row in FORMATS.values() if row.export_target is not None)


def quantizers() -> dict[str, FileFormat]:
    """`mhyolo quantize --backend` name -> the format it writes."""
    return {row.quantizer: row for row in FORMATS.values() if row.quantizer}


def load(weights: str | Path, runtime: str | None = None, options: LoadOptions = LoadOptions()) -> Any:
    """A model file as an `InferenceBackend`, read by its format's row; `runtime` (a row's `runtime`)
    runs the file in that runtime where it runs files of that suffix (OpenVINO: an .onnx)."""
    row = format_of_file(weights)
    if runtime is not None:
        choices = runtimes()
        if runtime not in choices:
            raise ConfigError(f"runtime must be one of {', '.join(choices)}, got {runtime!r}")
        chosen = next(r for r in FORMATS.values() if r.runtime == runtime)
        if row.fallback:
            readable = sorted({s for r in FORMATS.values() if r.runtime for s in (*r.suffixes, *r.runs)},
                              key=lambda s: (s != ".onnx", s))
            raise ConfigError(f"{Path(weights)}: runtime '{runtime}' needs an exported "
                              f"{' or '.join(readable)} model")
        if Path(weights).suffix.lower() in chosen.runs:
            row = chosen
    return row.load(weights, options)


def file_size_mb(path: str | Path) -> float:
    """Size on disk in MB (10^6 bytes), the files that belong with it included (an IR's `.bin`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    companions = next((row.companions for row in FORMATS.values() if suffix in row.suffixes), ())
    parts = [path] + [path.with_suffix(c) for c in companions]
    return sum(p.stat().st_size for p in parts if p.is_file()) / 1e6


def input_size_error(path: Any, fixed: int, requested: int, remedy: str | None = None,
                     made: str = "exported") -> ConfigError:
    """The error for asking a file made at one input size to run at another."""
    remedy = remedy or f"drop --imgsz or export again at {requested}"
    return ConfigError(f"{path} was {made} for --imgsz {fixed}, not {requested}: {remedy}")


def check_input_size(backend: Any, requested: int | None, remedy: str | None = None, made: str = "exported") -> None:
    """Raises `input_size_error` when `backend` takes one input size only and it is not `requested`."""
    fixed = getattr(backend, "imgsz", None)
    if fixed is not None and requested is not None and requested != fixed:
        raise input_size_error(getattr(backend, "path", "the model"), fixed, requested, remedy, made)


# ---------------------------------------------------------------------- the built-in formats
def _existing(weights: Any) -> Path:
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"model file not found: {path}")
    return path


def _load_torch(weights: Any, options: LoadOptions) -> Any:
    from mhyolo.model.weights import load_model

    model = load_model(weights, device=options.device)
    return model.for_inference() if options.inference_only else model




def _load_onnx(weights: Any, options: LoadOptions) -> Any:
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(_existing(weights), threads=options.threads)




def _onnx_metadata(path: Path) -> ExportMetadata:
    from mhyolo.infer.onnx_metadata import read_onnx_metadata

    return read_onnx_metadata(path)


def _onnx_target(stem: str, out: Path | None) -> Path:
    return Path(out) if out is not None else Path("runs/export") / f"{stem}.onnx"


def _quantize_onnx(job: QuantizeJob, meta: ExportMetadata) -> dict[str, Any]:
    """ONNX Runtime static QDQ INT8."""
    import onnx

    from mhyolo.deploy.calibration import calibration_batches
    from mhyolo.infer.onnx_metadata import read_onnx_metadata
    from mhyolo.deploy.quantize_ort import op_coverage, quantize_onnx_static

    calib = calibration_batches(job.calib, meta.imgsz, count=job.calib_images, seed=job.seed)
    quantize_onnx_static(job.weights, job.out, calib, method=job.method, reduce_range=job.reduce_range,
                         min_sqnr_db=job.min_sqnr_db, float_blocks=list(job.float_blocks))
    coverage = op_coverage(onnx.load(str(job.out)))
    print(coverage.summary(), file=sys.stderr)
    quant = read_onnx_metadata(job.out).extra["quantization"]
    print(f"weight range: {quant['weight_range']}", file=sys.stderr)
    return {"weight_range": quant["weight_range"],
            "float_blocks": quant["float_blocks"],  # kept float for their activation SQNR
            "op_coverage": {"quantize_linear": coverage.quantize_linear,
                            "dequantize_linear": coverage.dequantize_linear,
                            "int8_ops": dict(coverage.quantized_ops), "float_ops": dict(coverage.float_ops)}}


def _load_openvino(weights: Any, options: LoadOptions) -> Any:
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(_existing(weights), precision=options.precision, threads=options.threads)




def _openvino_metadata(path: Path) -> ExportMetadata:
    from mhyolo.deploy.openvino_model import read_model_and_metadata

    return read_model_and_metadata(path)[1]


def _openvino_convert(onnx_path: Path, target: Path) -> Path:
    from mhyolo.deploy.onnx_export import export_openvino

    return export_openvino(onnx_path, target)


def _openvino_target(stem: str, out: Path | None) -> Path:
    folder = Path(out) if out is not None else Path("runs/export") / f"{stem}_openvino"
    return folder if folder.suffix == ".xml" else folder / "model.xml"


def _quantize_openvino(job: QuantizeJob, meta: ExportMetadata) -> dict[str, Any]:
    """OpenVINO NNCF INT8, plain or accuracy-aware."""
    from mhyolo.deploy.calibration import calibration_batches
    from mhyolo.deploy.quantize_openvino import INPUTS, accuracy_target, fake_quantize_count, quantize_openvino

    calib = calibration_batches(job.calib, meta.imgsz, count=job.calib_images, seed=job.seed)
    target = accuracy_target(job.calib, meta, job.split) if job.mode == "accuracy" else None
    quantize_openvino(job.weights, job.out, calib, mode=job.mode, max_drop=job.max_drop,
                      validate_fn=target.fn if target else None, validation_data=target.items if target else None,
                      input_kind=INPUTS[job.input])
    info: dict[str, Any] = {"fake_quantize_nodes": fake_quantize_count(job.out), "input": INPUTS[job.input]}
    if target is not None:
        info["accuracy_metric"] = target.metric
    return info


def _rknn_module():
    """`mhyolo.deploy.rknn`, or an error saying this build has none."""
    try:
        return importlib.import_module("mhyolo.deploy.rknn")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("mhyolo"):
            raise MhyoloError("--backend rknn needs mhyolo.deploy.rknn, which this build does not have") from exc
        raise


def _load_rknn(weights: Any, options: LoadOptions) -> Any:
    """On a Rockchip board with rknn-toolkit-lite2 the file runs on its NPU; elsewhere in rknn-toolkit2's
    simulator (which has no NPU cores to choose)."""
    from mhyolo.deploy.rknn_lite import RknnLiteBackend, on_board

    if on_board():
        return RknnLiteBackend(Path(weights), options.npu_cores)
    from mhyolo.deploy.rknn import RknnSimulatorBackend

    return RknnSimulatorBackend(Path(weights))


def _rknn_metadata(path: Path) -> ExportMetadata:
    from mhyolo.deploy.rknn import sidecar_metadata

    return sidecar_metadata(path)


def _quantize_rknn(job: QuantizeJob, meta: ExportMetadata) -> dict[str, Any]:
    """rknn-toolkit2 INT8 for the target NPU (its calibration images drawn by the converter)."""
    _rknn_module().convert_rknn(job.weights, job.out, job.calib, calib_images=job.calib_images, seed=job.seed,
                                target=job.target)
    return {"target": job.target}


register_format(FileFormat(
    "torch", "PyTorch", (".safetensors", ".pt"), _load_torch, fixed_size=False, fallback=True))
register_format(FileFormat(
    "onnx", "ONNX", (".onnx",), _load_onnx, runtime="onnxruntime", metadata=_onnx_metadata,
    export_target=_onnx_target, quantizer="ort", quantize=_quantize_onnx, aliases=("ort",)))
register_format(FileFormat(
    "openvino", "OpenVINO IR", (".xml",), _load_openvino, companions=(".bin",), runtime="openvino",
    runs=(".onnx",), metadata=_openvino_metadata, convert=_openvino_convert, export_target=_openvino_target,
    quantizer="openvino", quantize=_quantize_openvino, quantizes_from=(".onnx", ".xml"), reference="openvino"))
register_format(FileFormat(
    "rknn", "RKNN", (".rknn",), _load_rknn, metadata=_rknn_metadata, quantizer="rknn", quantize=_quantize_rknn))
