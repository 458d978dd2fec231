"""`run_benchmark`: every requested format of a model made, scored and timed in one run.

Order: for each format the file is made (or reused) and scored on the validation
split; then every runnable backend is timed together, call by call, so latency
numbers in one table share the machine's load. Whatever fails for one format
(producer, loader, scoring or timing) becomes that row's "skipped" reason and the
others carry on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mhyolo.bench.accuracy import score_backend
from mhyolo.bench.formats import DETECTOR_FORMATS, FORMATS, ModelFiles, check_input_size, file_size_mb
from mhyolo.bench.report import ACCURACY_KEYS, BATCH_LOOPED, BATCH_NATIVE, Row, add_deltas, write_all
from mhyolo.bench.timing import DEFAULT_WARMUP, Timing, interleaved_times
from mhyolo.data.spec import DataSpec, load_data_spec
from mhyolo.errors import ConfigError
from mhyolo.eval.validate import class_mismatch
from mhyolo.infer.backends.base import ExportedBackend
from mhyolo.machine import cpu_info

THROUGHPUT_BATCH = 8


@dataclass
class BenchSettings:
    weights: Path
    data: Path | None = None  # None: time only (INT8 calibrated on `calib_dir` or generated images)
    imgsz: int = 640
    out: Path = Path("runs/benchmark")
    formats: Sequence[str] = tuple(FORMATS)
    runs: int = 30
    warmup: int = DEFAULT_WARMUP
    threads: int | None = None  # None: PyTorch's current setting, applied to every runtime
    calib_images: int = 50
    detector: Path | None = None  # detector-only weights; None: the model's own detector part
    own_detector: bool = True  # with no `detector`, time the model without its type heads beside it
    progress: bool = True
    accuracy: bool = True  # False: time only, even with a dataset (which still calibrates INT8)
    calib_dir: Path | None = None  # with no dataset: the photos INT8 formats are calibrated on

    def check(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
        if self.runs < 1 or self.warmup < 0:
            raise ConfigError(f"--runs must be at least 1 and warm-up not negative (got {self.runs}, {self.warmup})")
        if self.imgsz % 32:
            raise ConfigError(f"--imgsz must be a multiple of 32 (the largest stride), got {self.imgsz}")


@dataclass
class BenchResult:
    rows: list[Row]
    settings: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def _say(settings: BenchSettings, message: str) -> None:
    if settings.progress:
        print(message, file=sys.stderr, flush=True)


def own_detector(weights: Path, out: Path) -> Path | None:
    """The model's detector part (type heads dropped, same detector tensors) as a checkpoint
    in `out`, or None when the model has no type heads: the reference that makes the
    heads' overhead a ratio against exactly the detector they sit on."""
    from mhyolo.model.weights import load_model, save_checkpoint
    from mhyolo.model.yolo import detector_part

    model = load_model(weights)
    if set(model.heads) == {"detection"}:
        return None
    target = Path(out) / f"{Path(weights).stem}-detector.safetensors"
    save_checkpoint(target, detector_part(model), {"derived_from": str(weights)})
    return target


def unscored_reason(settings: BenchSettings, spec: DataSpec | None, weights: Path) -> str | None:
    """Why the accuracy columns stay empty, or None when every format is scored."""
    if not settings.accuracy:
        return "not asked (--no-accuracy)"
    if spec is None:
        return "no dataset given (--data)"
    from mhyolo.model.weights import load_model

    return class_mismatch(len(load_model(weights).names), spec)


def _calibration_yaml(settings: BenchSettings) -> Path:
    """The dataset INT8 formats calibrate on: `--data`'s train split, else a stand-in set."""
    if settings.data is not None:
        return Path(settings.data)
    from mhyolo.deploy.calibration import stand_in_calibration_set

    return stand_in_calibration_set(Path(settings.out) / "calibration", settings.calib_dir,
                                    count=settings.calib_images)


def _jobs(settings: BenchSettings, threads: int, detector: Path | None, calibration: Path,
          unscored: str | None) -> list[tuple[Row, ModelFiles]]:
    """(empty row, files) per model and format, in table order (no duplicates)."""
    spec_kwargs = dict(imgsz=settings.imgsz, data_yaml=calibration, threads=threads,
                       calib_images=settings.calib_images, progress=settings.progress, unscored=unscored)
    out = Path(settings.out)
    models = [("model", ModelFiles(Path(settings.weights), out, **spec_kwargs), list(dict.fromkeys(settings.formats)))]
    if detector is not None:
        models.append(("detector", ModelFiles(Path(detector), out / "detector", **spec_kwargs),
                       list(DETECTOR_FORMATS)))
    return [(Row(id=key if name == "model" else f"{name}/{key}", model=name, format=key, title=FORMATS[key].title),
             files) for name, files, keys in models for key in keys]


def _prepare(row: Row, files: ModelFiles, spec: DataSpec | None, settings: BenchSettings) -> Any | None:
    """Make, load and (where it can be) score one format; the backend when it should be timed."""
    fmt = FORMATS[row.format]
    try:
        path = fmt.produce(files)
    except Exception as exc:  # noqa: BLE001 - any producer failure skips this row only
        row.skip("produce", exc)
        return None
    row.file, row.size_mb = str(path), file_size_mb(path)
    try:
        backend, row.note = fmt.load(files, path)
        check_input_size(backend, settings.imgsz)
    except Exception as exc:  # noqa: BLE001
        row.skip("load", exc)
        return None
    if files.unscored is None and spec is not None:
        files.say("scoring on the validation split")
        try:
            scores = score_backend(backend, spec, settings.imgsz, progress=settings.progress)
        except Exception as exc:  # noqa: BLE001
            row.skip("validate", exc)
            return None
        for key in ACCURACY_KEYS:
            setattr(row, key, scores[key])
    if not fmt.timed:
        row.latency_note = fmt.untimed_note
        close = getattr(backend, "close", None)
        if close is not None:
            close()  # e.g. the simulator's worker process
        return None
    return backend


def _time(timed: dict[str, tuple[Row, Any]], settings: BenchSettings) -> None:
    """Batch-1 latency and batch-8 throughput of every backend, interleaved."""
    x8 = torch.rand(THROUGHPUT_BATCH, 3, settings.imgsz, settings.imgsz)
    x1 = x8[:1].clone()
    calls = {}
    for row_id, (_, backend) in timed.items():
        calls[f"{row_id}@1"] = lambda b=backend: b.predict(x1)
        calls[f"{row_id}@8"] = lambda b=backend: b.predict(x8)
    _say(settings, f"timing {len(timed)} format(s): {settings.warmup} warm-up + {settings.runs} rounds, "
                   f"batch 1 and batch {THROUGHPUT_BATCH}")
    times, errors = interleaved_times(calls, settings.runs, settings.warmup, progress=settings.progress)
    for row_id, (row, backend) in timed.items():
        failed = [errors[k] for k in (f"{row_id}@1", f"{row_id}@8") if k in errors]
        if failed:
            row.latency_note = f"timing failed: {failed[0].splitlines()[0]}"
            continue
        single, batch = Timing.from_times(times[f"{row_id}@1"]), Timing.from_times(times[f"{row_id}@8"])
        row.latency_median_ms, row.latency_p90_ms = single.median_ms, single.p90_ms
        row.images_per_s = THROUGHPUT_BATCH * 1000 / batch.median_ms
        looped = isinstance(backend, ExportedBackend) and not backend.metadata.dynamic_batch
        row.throughput_mode = BATCH_LOOPED if looped else BATCH_NATIVE


def run_benchmark(settings: BenchSettings) -> BenchResult:
    """Make, score and time every requested format; write benchmark.md/.json/.png into `out`."""
    settings.check()
    spec = load_data_spec(settings.data) if settings.data is not None else None
    unscored = unscored_reason(settings, spec, Path(settings.weights))
    if unscored:
        _say(settings, f"accuracy not scored: {unscored}; timing every format")
    calibration = _calibration_yaml(settings)
    detector = settings.detector
    if detector is None and settings.own_detector and Path(settings.weights).suffix in (".safetensors", ".pt"):
        detector = own_detector(Path(settings.weights), Path(settings.out) / "detector")
    previous_threads = torch.get_num_threads()
    threads = settings.threads or previous_threads
    torch.set_num_threads(threads)
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        jobs = _jobs(settings, threads, detector, calibration, unscored)
        timed: dict[str, tuple[Row, Any]] = {}
        for i, (row, files) in enumerate(jobs, 1):
            _say(settings, f"[{i}/{len(jobs)}] {row.label}")
            backend = _prepare(row, files, spec, settings)
            if row.status != "ok":
                _say(settings, f"    skipped: {row.reason}")
            elif backend is not None:
                timed[row.id] = (row, backend)
        if timed:
            _time(timed, settings)
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_grad_enabled(grad)
    rows = [row for row, _ in jobs]
    add_deltas(rows)
    described = {"weights": str(settings.weights), "detector": str(detector) if detector else None,
                 "data": str(settings.data) if settings.data is not None else None, "out": str(settings.out),
                 "imgsz": settings.imgsz, "runs": settings.runs, "warmup": settings.warmup, "threads": threads,
                 "calib_images": settings.calib_images, "calibration": str(calibration), "unscored": unscored,
                 "throughput_batch": THROUGHPUT_BATCH, "formats": list(dict.fromkeys(settings.formats)),
                 "machine": cpu_info(threads).to_dict()}
    result = BenchResult(rows=rows, settings=described)
    result.paths = write_all(rows, described, Path(settings.out))
    return result
