"""The benchmark table: one `Row` per (model, format), written as Markdown, JSON and a plot.

Accuracy changes are differences to the same model's PyTorch FP32 row in the
metric's own unit (a fraction: -0.012 is 1.2 points of mAP lost), so a reader
sees at once what a conversion costs; they are empty when that row is missing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mhyolo.defaults import PREDICT_CONF
from mhyolo.eval.results import columns

ACCURACY_KEYS = ("map50", "map50_95", "cls_accuracy", "typed_map50")
MASK_KEYS = ("mask_map50", "mask_map50_95")  # columns only when some row has a mask model's figures
ACCURACY_LABELS = dict(columns(*ACCURACY_KEYS, *MASK_KEYS))
REFERENCE_FORMAT = "torch"
TIMING_HEAD = ["model ms", "model p90", "end-to-end ms", "e2e p90", "outside model", "frames/s (stream)"]


@dataclass
class Row:
    """One model in one format; `status` is "ok" or "skipped" (then `reason` says why)."""

    id: str
    model: str  # "model" or "detector"
    format: str  # key in `formats.FORMATS`
    title: str
    status: str = "ok"
    reason: str | None = None
    file: str | None = None
    size_mb: float | None = None
    latency_median_ms: float | None = None  # the model call alone, batch 1 (graph run, network forward)
    latency_p90_ms: float | None = None
    e2e_median_ms: float | None = None  # one real image end to end: letterbox, model, decoding, NMS, types
    e2e_p90_ms: float | None = None
    outside_model: float | None = None  # share of the end-to-end time spent outside the model call
    frames_per_s: float | None = None  # throughput mode: frames end to end with model calls overlapped
    throughput_mode: str | None = None  # how those calls overlapped, or why that mode was not timed
    latency_note: str | None = None  # why there is no latency (simulator, timing failed)
    map50: float | None = None
    map50_95: float | None = None
    cls_accuracy: float | None = None
    typed_map50: float | None = None
    mask_map50: float | None = None
    mask_map50_95: float | None = None
    delta: dict[str, float | None] = field(default_factory=dict)  # accuracy key -> change vs PyTorch FP32
    note: str = ""
    classifier_file: str | None = None  # the crop classifier of a two-stage row (its size is in size_mb)
    ball_ms: dict[str, float] = field(default_factory=dict)  # balls in the image -> median ms, whole image
    ball_detections: dict[str, int] = field(default_factory=dict)  # balls in the image -> boxes kept

    def skip(self, stage: str, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            from mhyolo.errors import MhyoloError

            text = str(error) if isinstance(error, MhyoloError) else f"{type(error).__name__}: {error}"
        else:
            text = error
        self.status = "skipped"
        self.reason = f"{stage}: {text.splitlines()[0] if text else type(error).__name__}"

    @property
    def label(self) -> str:
        return self.title if self.model == "model" else f"{self.model}: {self.title}"


def accuracy_keys(rows: list[Row]) -> tuple[str, ...]:
    """The accuracy columns of a table of `rows`: the mask figures only where some row has them."""
    masks = any(getattr(row, key) is not None for row in rows for key in MASK_KEYS)
    return ACCURACY_KEYS + (MASK_KEYS if masks else ())


def add_deltas(rows: list[Row]) -> None:
    """Fill each row's `delta` against the PyTorch FP32 row of the same model."""
    references = {r.model: r for r in rows if r.format == REFERENCE_FORMAT and r.status == "ok"}
    for row in rows:
        ref = references.get(row.model)
        row.delta = {key: _difference(getattr(row, key), getattr(ref, key) if ref else None)
                     for key in accuracy_keys(rows)}


def _difference(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return None
    return value - reference


def head_overhead(rows: list[Row]) -> dict[str, float]:
    """Median model call of the model over the detector's, per runtime both were timed in."""
    timed = {(r.model, r.format): r.latency_median_ms for r in rows if r.latency_median_ms}
    return {fmt: timed[("model", fmt)] / timed[("detector", fmt)]
            for (model, fmt) in timed if model == "model" and ("detector", fmt) in timed}


# ------------------------------------------------------------------ Markdown
def _num(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def timing_cells(row: Row) -> list[str]:
    """The six timing cells of a row that ran (TIMING_HEAD), shared by the Markdown and HTML tables."""
    timed = row.latency_median_ms is not None
    stream = _num(row.frames_per_s, 1)
    if row.throughput_mode:
        stream = f"{stream} ({row.throughput_mode})" if row.frames_per_s is not None else row.throughput_mode
    return [_num(row.latency_median_ms, 1) if timed else row.latency_note or "–", _num(row.latency_p90_ms, 1),
            _num(row.e2e_median_ms, 1), _num(row.e2e_p90_ms, 1),
            "–" if row.outside_model is None else f"{100 * row.outside_model:.0f}%", stream]


def timing_description(settings: dict[str, Any]) -> str:
    """What the timing columns measure, for the header of either table."""
    frames = settings.get("frames") or []
    if settings.get("rounds"):
        how = (f"each format timed as a user runs it, formats one after another: {settings['runs']} calls of each "
               f"kind in {settings['rounds']} rounds of consecutive calls (order reversed every other round, "
               f"{settings['warmup']} warm-up calls per round, a {settings.get('pause_s', 0):g} s pause before each "
               f"format so other runtimes' idle threads sleep), {settings['threads']} thread(s)")
    else:  # a report written before formats were timed in blocks
        how = (f"{settings['runs']} interleaved rounds after {settings['warmup']} warm-up rounds, {settings['threads']} "
               "thread(s), formats interleaved call by call")
    return (f"{how}; medians and p90. model ms: the model call alone (an "
            "exported graph's run, the PyTorch network's forward), batch 1. end-to-end ms: one real image "
            f"({Path(frames[0]).name if frames else '?'}) from BGR pixels to typed boxes, batch 1: letterbox, "
            f"model, decoding, NMS at conf {settings.get('ball_conf', PREDICT_CONF)}, types. outside model: the share "
            "of end-to-end spent outside the model call. frames/s (stream): throughput mode, what mhyolo predict "
            f"does on a folder or video: {len(frames)} images end to end with model calls overlapped (in brackets "
            "how; the same predictions as one at a time).")


def markdown(rows: list[Row], settings: dict[str, Any]) -> str:
    """The table with a header saying how it was measured."""
    head = ["format", "file", "MB", *TIMING_HEAD]
    keys = accuracy_keys(rows)
    for key in keys:
        head += [ACCURACY_LABELS[key], "Δ"]
    head.append("note")
    data = f"data `{settings['data']}` (val split)" if settings.get("data") else "no dataset"
    unscored = accuracy_note(settings)
    lines = ["# mhyolo benchmark", "",
             f"Machine: {machine_line(settings)}.", "",
             f"weights `{settings['weights']}`"
             + (f", detector `{settings['detector']}`" if settings.get("detector") else "")
             + f", {data}, imgsz {settings['imgsz']}"
             + (" (native: each image at its own size where the runtime allows)" if settings.get("native") else "")
             + ".",
             *([unscored] if unscored else []),
             f"Timing: {timing_description(settings)} Δ: change against the same model's PyTorch FP32 row.",
             *([f"Two-stage rows: the one-class detector with the crop classifier `{settings['classifier']}` "
                "in the matching runtime; their model column times the detector's call alone, the end-to-end "
                "columns include the classifier, whose cost per ball is in the whole-image table below."]
               if settings.get("classifier") else []), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.status != "ok":
            cells = [row.label, _file_cell(row, settings.get("out"))] + ["–"] * (len(head) - 3) + [f"skipped: {row.reason}"]
        else:
            cells = [row.label, _file_cell(row, settings.get("out")), _num(row.size_mb, 1), *timing_cells(row)]
            for key in keys:
                cells += [_num(getattr(row, key), 3), _signed(row.delta.get(key))]
            cells.append(row.note)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ball_table(rows, settings)
    lines += multiscale_table(rows, settings)
    overhead = head_overhead(rows)
    if overhead:
        lines += ["", "Type-head overhead (model / detector median model call, same run): "
                  + ", ".join(f"{_title(rows, fmt)} ×{ratio:.3f}" for fmt, ratio in overhead.items())]
    return "\n".join(lines) + "\n"


def ball_table(rows: list[Row], settings: dict[str, Any]) -> list[str]:
    """Whole-image latency at each ball count (and the cost of one more ball), when it was timed."""
    counts = [str(c) for c in settings.get("balls") or []]
    timed = [r for r in rows if r.ball_ms]
    if not counts or not timed:
        return []
    head = ["format"] + [f"{c} ball{'s' if c != '1' else ''}: ms (boxes)" for c in counts]
    if len(counts) > 1:
        head.append(f"ms per kept box ({counts[0]} → {counts[-1]} balls)")
    lines = ["", f"Whole images with {', '.join(counts)} pasted ball crops ({settings.get('ball_image_side')} px, "
             f"conf {settings.get('ball_conf')}): median ms per image of letterbox, model, NMS and types (a "
             "two-stage row: + crops and classifier), timed with the calls above; in brackets the boxes "
             "kept.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in timed:
        cells = [row.label] + [f"{_num(row.ball_ms.get(c), 1)} ({row.ball_detections.get(c, '–')})" for c in counts]
        if len(counts) > 1:
            first, last = row.ball_ms.get(counts[0]), row.ball_ms.get(counts[-1])
            boxes = row.ball_detections.get(counts[-1], 0) - row.ball_detections.get(counts[0], 0)
            cells.append(_num((last - first) / boxes if first is not None and last is not None and boxes else None, 2))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def multiscale_table(rows: list[Row], settings: dict[str, Any]) -> list[str]:
    """End-to-end ms of one image at several scales, per merge rule, beside the row's single-scale
    end-to-end time; only when the benchmark was asked for `--scales`."""
    spec = settings.get("multiscale")
    if not spec:
        return []
    rules, results = spec["rules"], spec["rows"]
    sizes = next((entry["sizes"] for entry in results.values() if entry.get("sizes")), None)
    head = ["format", "single scale: end-to-end ms", *[f"{rule}: ms (boxes)" for rule in rules], "note"]
    lines = ["", f"Multi-scale: --scales {' '.join(spec['scales'])}"
             + (f" ({', '.join(map(str, sizes))} px)" if sizes else "") + (" + flip" if spec["flip"] else "")
             + f": the end-to-end image at every scale (letterbox, model, NMS and types per pass), then each merge "
             f"rule, median ms, timed with the calls above; in brackets the boxes kept (conf "
             f"{settings.get('ball_conf')}). A fixed-size graph runs a larger scale as tiles of its size and "
             "cannot run a smaller one.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        entry = results.get(row.id)
        if row.status != "ok" or entry is None:
            continue
        cells = [row.label, _num(row.e2e_median_ms, 1),
                 *[f"{_num(entry['ms'].get(rule), 1)} ({entry['boxes'].get(rule, '–')})" for rule in rules],
                 entry.get("note") or ""]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


def machine_line(settings: dict[str, Any]) -> str:
    """The CPU a benchmark ran on: figures from two machines are only comparable as ratios."""
    machine = settings.get("machine")
    if not machine:
        return "not recorded"
    flags = ", ".join(machine.get("isa") or []) or "no AVX2"
    kernels = f"; PyTorch kernels {machine['torch_kernels']}" if machine.get("torch_kernels") else ""
    return (f"{machine['name']}, {machine['logical_cores']} logical cores, {machine.get('threads_used')} thread(s) "
            f"used; {flags}{kernels}")


def accuracy_note(settings: dict[str, Any]) -> str | None:
    """Why the accuracy columns are empty, and what INT8 was calibrated on then; None when scored."""
    if not settings.get("unscored"):
        return None
    stand_in = "" if settings.get("data") else " (stand-in images: timing only)"
    return (f"Accuracy not scored: {settings['unscored']}. INT8 formats calibrated on "
            f"`{settings.get('calibration')}`{stand_in}.")


def _file_cell(row: Row, out: str | None) -> str:
    """The file relative to the output folder (IRs of several formats share a name), else its name."""
    if not row.file:
        return "–"
    path = Path(row.file)
    if out is not None and path.is_relative_to(out):
        return f"`{path.relative_to(out)}`"
    return f"`{path.name}`"


def _title(rows: list[Row], fmt: str) -> str:
    return next(r.title for r in rows if r.format == fmt)


# ---------------------------------------------------------------- JSON, plot
def to_json(rows: list[Row], settings: dict[str, Any]) -> dict[str, Any]:
    return {"settings": settings, "rows": [asdict(r) for r in rows], "head_overhead": head_overhead(rows)}


def plot(rows: list[Row], path: Path) -> Path:
    """Median model call and end-to-end time per format (bars, p90 as whisker) beside latency against mAP50-95."""
    fig = Figure(figsize=(13.0, 5.0), dpi=100)
    bars, scatter = fig.subplots(1, 2)
    timed = [r for r in rows if r.status == "ok" and r.latency_median_ms is not None]
    labels = [r.label for r in timed]
    places = np.arange(len(timed), dtype=float)
    series = (("latency_median_ms", "latency_p90_ms", "tab:blue", "model call"),
              ("e2e_median_ms", "e2e_p90_ms", "tab:orange", "end to end"))
    for offset, (median, p90, colour, name) in enumerate(series):
        medians = [getattr(r, median) or 0.0 for r in timed]
        spread = [max(0.0, (getattr(r, p90) or 0.0) - m) for r, m in zip(timed, medians)]
        bars.barh(places + 0.4 * offset - 0.2, medians, height=0.4, xerr=[[0.0] * len(timed), spread], color=colour,
                  alpha=0.8, label=name)
    bars.set_yticks(places, labels)
    bars.invert_yaxis()
    bars.set_xlabel("ms per image, batch 1 (bar: median, whisker: p90)")
    bars.set_title("Latency")
    bars.legend(fontsize=8, loc="best")
    bars.grid(axis="x", alpha=0.3)
    markers = "osD^vP*Xh<>"
    for i, r in enumerate(r for r in timed if r.map50_95 is not None):
        scatter.scatter(r.latency_median_ms, r.map50_95, s=50, marker=markers[i % len(markers)], label=r.label)
    for r in rows:  # scored but not timed (simulator): accuracy only, as a line
        if r.status == "ok" and r.latency_median_ms is None and r.map50_95 is not None:
            scatter.axhline(r.map50_95, linestyle="--", linewidth=1, color="grey",
                            label=f"{r.label} (accuracy only, not timed)")
    if scatter.get_legend_handles_labels()[0]:
        scatter.legend(fontsize=8, loc="best")
    scatter.set_xlabel("median ms per image, model call, batch 1")
    scatter.set_ylabel("mAP50-95 (val)")
    scatter.set_title("Accuracy against latency")
    scatter.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_all(rows: list[Row], settings: dict[str, Any], out: Path) -> dict[str, Path]:
    """`benchmark.md`, `benchmark.json` and `benchmark.png` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "benchmark.md", "json": out / "benchmark.json", "plot": out / "benchmark.png"}
    paths["markdown"].write_text(markdown(rows, settings))
    paths["json"].write_text(json.dumps(to_json(rows, settings), indent=2))
    plot(rows, paths["plot"])
    return paths
