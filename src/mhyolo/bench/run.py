"""`run_benchmark`: every requested format of a model made, scored and timed in one run.

Order: for each format the file is made (or reused) and scored on the validation
split; then every runnable backend is timed in the same run, format after format in
blocks of consecutive calls over a few rounds (`bench.timing.blocked_times`), so each is
timed as a user runs it and the numbers in one table share the machine's drifting load. Whatever fails for one format
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
from mhyolo.bench.ball_images import BALL_COUNTS, IMAGE_SIDE, ball_images
from mhyolo.bench.formats import DETECTOR_FORMATS, FORMATS, ModelFiles, check_input_size
from mhyolo.bench.frames import sample_frames
from mhyolo.bench.report import ACCURACY_KEYS, MASK_KEYS, Row, add_deltas, write_all
from mhyolo.bench.timing import DEFAULT_ROUNDS, DEFAULT_WARMUP, SWITCH_PAUSE_S, Timing, blocked_times
from mhyolo.data.spec import DataSpec, load_data_spec
from mhyolo.defaults import DEFAULT_IMGSZ, PREDICT_CONF
from mhyolo.deploy.formats import file_size_mb
from mhyolo.errors import ConfigError
from mhyolo.bench.two_stage import CLASSIFIER_FORMATS
from mhyolo.infer.crop_types import check_detector
from mhyolo.eval.validate import class_mismatch
from mhyolo.machine import cpu_info

BALL_CONF = PREDICT_CONF  # whole-image timing keeps what `mhyolo predict` shows


@dataclass
class BenchSettings:
    weights: Path
    data: Path | None = None  # None: time only (INT8 calibrated on `calib_dir` or generated images)
    imgsz: int = DEFAULT_IMGSZ
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
    classifier: Path | None = None  # a crop classifier behind the one-class `weights`: two-stage rows
    balls: Sequence[int] | None = None  # with a dataset: also time whole images holding this many balls
    # (None: 1, 4, 16 for a two-stage benchmark, none otherwise)
    streams: int | None = None  # throughput mode: calls in flight (None: the runtime's choice)
    multiscale: Sequence[Any] = ()  # `ScaleSettings`, one per merge rule: each timed end to end per row
    native: bool = False  # score and time each image at its own size (`NativeSize` above `imgsz`) where the
    # runtime takes any shape; a fixed-size graph keeps its `imgsz` (said in its row's note)

    def native_rule(self, backend: Any) -> Any:
        """The `NativeSize` rule for `backend`, or None (not asked for, or a graph of one fixed size)."""
        from mhyolo.infer.input_size import NativeSize
        from mhyolo.infer.predictor import accepts_any_shape

        return NativeSize.from_low(self.imgsz) if self.native and accepts_any_shape(backend) else None

    @property
    def ball_counts(self) -> tuple[int, ...]:
        if self.balls is None:
            return BALL_COUNTS if self.classifier is not None else ()
        return tuple(self.balls)

    def check(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
        if self.runs < 1 or self.warmup < 0:
            raise ConfigError(f"--runs must be at least 1 and warm-up not negative (got {self.runs}, {self.warmup})")
        if self.imgsz % 32:
            raise ConfigError(f"--imgsz must be a multiple of 32 (the largest stride), got {self.imgsz}")
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"--streams must be at least 1, got {self.streams}")


@dataclass
class Timed:
    """A row ready to time: the backend, and the crop classifier behind it (two-stage rows)."""

    row: Row
    backend: Any
    classifier: Any = None
    stream: Any = None  # its throughput-mode predictor, once made


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
    model_files = ModelFiles(Path(settings.weights), out, **spec_kwargs)
    if settings.classifier is not None:
        from mhyolo.bench.two_stage import ClassifierFiles

        model_files.classifier = ClassifierFiles(Path(settings.classifier), out / "classifier", settings.data,
                                                 threads=threads, progress=settings.progress)
    models = [("model", model_files, list(dict.fromkeys(settings.formats)))]
    if detector is not None:
        models.append(("detector", ModelFiles(Path(detector), out / "detector", **spec_kwargs),
                       list(DETECTOR_FORMATS)))
    return [(Row(id=key if name == "model" else f"{name}/{key}", model=name, format=key, title=FORMATS[key].title),
             files) for name, files, keys in models for key in keys]


def _prepare(row: Row, files: ModelFiles, spec: DataSpec | None, settings: BenchSettings) -> Timed | None:
    """Make, load and (where it can be) score one format; what should be timed, if anything."""
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
    native = settings.native_rule(backend)
    if settings.native and native is None:
        row.note = "; ".join(n for n in (row.note, f"fixed {settings.imgsz} px input, not native") if n)
    classifier = None
    if files.classifier is not None:
        try:
            classifier, classifier_path = files.classifier.backend(row.format)
            check_detector(backend, classifier)
        except Exception as exc:  # noqa: BLE001 - no classifier in this runtime: this row only
            row.skip("classifier", exc)
            return None
        row.classifier_file, row.size_mb = str(classifier_path), row.size_mb + file_size_mb(classifier_path)
        row.note = "; ".join(n for n in (row.note, f"+ classifier ({CLASSIFIER_FORMATS[row.format]})") if n)
    if files.unscored is None and spec is not None:
        files.say("scoring on the validation split")
        try:
            scores = score_backend(backend, spec, settings.imgsz, progress=settings.progress, classifier=classifier,
                                   native=native)
        except Exception as exc:  # noqa: BLE001
            row.skip("validate", exc)
            return None
        for key in (*ACCURACY_KEYS, *MASK_KEYS):
            setattr(row, key, scores.get(key))
    if not fmt.timed:
        row.latency_note = fmt.untimed_note
        close = getattr(backend, "close", None)
        if close is not None:
            close()  # e.g. the simulator's worker process
        return None
    return Timed(row, backend, classifier)


def _ball_calls(timed: dict[str, Timed], images: dict[int, Any], settings: BenchSettings) -> dict[str, Any]:
    """One whole-image call per row and ball count: letterbox, model, NMS and types (for a two-stage row
    the crops and the classifier too), what a deployed model pays per frame; detections counted once."""
    from mhyolo.infer.assemble import InferenceSettings, build_predictor

    calls = {}
    for row_id, item in timed.items():
        predictor = build_predictor(item.backend, settings.imgsz, InferenceSettings(conf=BALL_CONF),
                                    classifier=item.classifier, native=settings.native_rule(item.backend))
        for count, image in images.items():
            item.row.ball_detections[str(count)] = len(predictor.predict([image])[0])
            calls[f"{row_id}#{count}"] = lambda p=predictor, im=image: p.predict([im])
    return calls


def _multiscale_calls(timed: dict[str, Timed], frames: list[Any], settings: BenchSettings,
                      results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One image end to end at every scale of each merge rule, per row (`row@scales:rule`); a row whose
    runtime cannot run those scales (a fixed graph asked for a smaller one) gets the reason instead."""
    from mhyolo.infer.assemble import InferenceSettings, build_predictor

    calls = {}
    for row_id, item in timed.items():
        entry = results.setdefault(row_id, {"ms": {}, "boxes": {}, "note": None, "sizes": None})
        for scaled in settings.multiscale:
            try:
                predictor = build_predictor(item.backend, settings.imgsz,
                                            InferenceSettings(conf=BALL_CONF, scales=scaled), classifier=item.classifier)
                entry["boxes"][scaled.merge] = len(predictor.predict(frames[:1])[0])
            except Exception as exc:  # noqa: BLE001 - this row's multi-scale cells only
                entry["note"] = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                break
            entry["sizes"] = list(predictor.sizes)
            calls[f"{row_id}@scales:{scaled.merge}"] = lambda p=predictor: p.predict(frames[:1])
    return calls


def _stream(item: Timed, predictor: Any, settings: BenchSettings) -> Any:
    """The row's throughput-mode predictor, or None (with the reason in the row) when it cannot be made."""
    from mhyolo.infer.stream import StreamPredictor

    try:
        item.stream = StreamPredictor(predictor, settings.streams)
    except Exception as exc:  # noqa: BLE001 - the other columns of the row are still timed
        item.row.throughput_mode = f"not timed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None
    item.row.throughput_mode = item.stream.description
    return item.stream


def row_of_call(key: str) -> str:
    """The row a timed call belongs to (`pytorch@model`, `pytorch#4`, `pytorch@scales:size` -> `pytorch`)."""
    return key.split("@", 1)[0].split("#", 1)[0]


def _time(timed: dict[str, Timed], settings: BenchSettings, images: dict[int, Any], frames: list[Any],
          multiscale: dict[str, dict[str, Any]]) -> None:
    """Batch-1 model call and end-to-end time on a real image, throughput-mode frames/s on `frames`,
    whole images with 1, 4, 16 balls, and the real image at several scales per merge rule (into
    `multiscale`), of every backend, format after format in the same rounds (`blocked_times`)."""
    from mhyolo.infer.assemble import InferenceSettings, build_predictor

    calls = {}
    for row_id, item in timed.items():
        predictor = build_predictor(item.backend, settings.imgsz, InferenceSettings(conf=BALL_CONF),
                                    classifier=item.classifier, native=settings.native_rule(item.backend))
        x, _ = predictor.prepare(frames[:1])
        calls[f"{row_id}@model"] = lambda i=predictor.inference, x=x: i.call(x)
        calls[f"{row_id}@e2e"] = lambda p=predictor: p.predict(frames[:1])
        stream = _stream(item, predictor, settings)
        if stream is not None:
            calls[f"{row_id}@stream"] = lambda s=stream: list(s.predict(enumerate(frames)))
    calls.update(_ball_calls(timed, images, settings))
    calls.update(_multiscale_calls(timed, frames, settings, multiscale))
    _say(settings, f"timing {len(timed)} format(s), one after another in {DEFAULT_ROUNDS} rounds: {settings.runs} "
                   f"calls (+ {settings.warmup} warm-up per round) of the model call, one image end to end and "
                   f"{len(frames)} in throughput mode"
                   + (f", images with {', '.join(map(str, images))} balls" if images else ""))
    try:
        times, errors = blocked_times(calls, settings.runs, settings.warmup, group_of=row_of_call,
                                      progress=settings.progress)
    finally:
        for item in timed.values():
            if item.stream is not None:
                item.stream.close()
    for row_id, entry in multiscale.items():
        for scaled in settings.multiscale:
            key = f"{row_id}@scales:{scaled.merge}"
            if key in times:
                entry["ms"][scaled.merge] = Timing.from_times(times[key]).median_ms
            elif key in errors:
                entry["note"] = f"timing failed: {errors[key].splitlines()[0]}"
    for row_id, item in timed.items():
        row = item.row
        for count in images:
            key = f"{row_id}#{count}"
            if key in times:
                row.ball_ms[str(count)] = Timing.from_times(times[key]).median_ms
        if f"{row_id}@stream" in errors:
            row.throughput_mode = f"not timed: {errors[f'{row_id}@stream'].splitlines()[0]}"
        elif f"{row_id}@stream" in times:
            row.frames_per_s = len(frames) * 1000 / Timing.from_times(times[f"{row_id}@stream"]).median_ms
        failed = [errors[k] for k in (f"{row_id}@model", f"{row_id}@e2e") if k in errors]
        if failed:
            row.latency_note = f"timing failed: {failed[0].splitlines()[0]}"
            continue
        model, e2e = Timing.from_times(times[f"{row_id}@model"]), Timing.from_times(times[f"{row_id}@e2e"])
        row.latency_median_ms, row.latency_p90_ms = model.median_ms, model.p90_ms
        row.e2e_median_ms, row.e2e_p90_ms = e2e.median_ms, e2e.p90_ms
        row.outside_model = max(0.0, 1.0 - model.median_ms / e2e.median_ms)


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
        timed: dict[str, Timed] = {}
        for i, (row, files) in enumerate(jobs, 1):
            _say(settings, f"[{i}/{len(jobs)}] {row.label}")
            item = _prepare(row, files, spec, settings)
            if row.status != "ok":
                _say(settings, f"    skipped: {row.reason}")
            elif item is not None:
                timed[row.id] = item
        images = ball_images(spec, settings.ball_counts, side=max(IMAGE_SIDE, settings.imgsz)) \
            if spec is not None and settings.ball_counts else {}
        frames, frames_from = sample_frames(Path(settings.data) if settings.data is not None else calibration)
        multiscale: dict[str, dict[str, Any]] = {}
        if timed:
            _time(timed, settings, images, frames, multiscale)
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_grad_enabled(grad)
    rows = [row for row, _ in jobs]
    add_deltas(rows)
    described = {"weights": str(settings.weights), "detector": str(detector) if detector else None,
                 "data": str(settings.data) if settings.data is not None else None, "out": str(settings.out),
                 "imgsz": settings.imgsz, "runs": settings.runs, "warmup": settings.warmup, "rounds": DEFAULT_ROUNDS,
                 "pause_s": SWITCH_PAUSE_S, "threads": threads,
                 "calib_images": settings.calib_images, "calibration": str(calibration), "unscored": unscored,
                 "frames": [str(p) for p in frames_from], "streams": settings.streams,
                 "formats": list(dict.fromkeys(settings.formats)),
                 "classifier": str(settings.classifier) if settings.classifier else None,
                 "balls": list(images), "ball_image_side": max(IMAGE_SIDE, settings.imgsz) if images else None,
                 "ball_conf": BALL_CONF,
                 "machine": cpu_info(threads).to_dict()}
    if settings.native:  # only then, as for multiscale below
        described["native"] = True
    if settings.multiscale:  # only then: a benchmark without --scales writes what it always wrote
        first = settings.multiscale[0]
        described["multiscale"] = {"scales": [str(v) for v in first.sizes], "flip": first.flip,
                                   "rules": [s.merge for s in settings.multiscale], "rows": multiscale}
    result = BenchResult(rows=rows, settings=described)
    result.paths = write_all(rows, described, Path(settings.out))
    return result
