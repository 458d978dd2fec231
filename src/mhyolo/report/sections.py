"""The page's sections, in page order. A new kind of result gets its own `Section` subclass,
registered with `@register`: it says whether the run holds its inputs, what it adds to the
header's key figures, and renders its HTML. Sections whose inputs are absent are skipped."""

from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

from mhyolo.errors import DataError
from mhyolo.report.html import DASH, Html, code, figure, figures, join, number, paragraph, signed, table, tag
from mhyolo.report.run_folder import RESULTS_CSV, RunFolder


class Section:
    """One part of the page; `key` is its anchor, `kind` names the run when this section's
    input is what the run is about (the first available one names the page)."""

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    kind: ClassVar[str | None] = None

    def __init__(self, run: RunFolder) -> None:
        self.run = run

    def available(self) -> bool:
        raise NotImplementedError

    def facts(self) -> dict[str, str]:
        """Key figures for the header (label -> value); the first section to name a label wins."""
        return {}

    def render(self) -> Html:
        raise NotImplementedError


SECTIONS: list[type[Section]] = []


def register(cls: type[Section]) -> type[Section]:
    if not cls.key or any(s.key == cls.key for s in SECTIONS):
        raise ValueError(f"section {cls.__name__}: key {cls.key!r} is empty or taken")
    SECTIONS.append(cls)
    return cls


def _score(value: Any) -> str:
    return DASH if not isinstance(value, (int, float)) else f"{value:.3f}"


def _architecture(run: RunFolder, folder: Path) -> str | None:
    """The architecture a training folder trained (its config.yaml)."""
    config = run.yaml(folder.relative_to(run.path) / "config.yaml")
    return str(config["model"]) if isinstance(config, dict) and config.get("model") else None


# ------------------------------------------------------------------ pipeline
@register
class Stages(Section):
    """`RUN/report.json` of `mhyolo pipeline`: every stage's model on the same val split."""

    key, title, kind = "stages", "Stages", "pipeline run"

    def available(self) -> bool:
        data = self.run.json("report.json")
        return isinstance(data, dict) and "models" in data

    def _report(self) -> dict[str, Any]:
        report = self.run.mapping("report.json", ("models",))
        if not isinstance(report["models"], dict):
            raise DataError(f"{self.run.path / 'report.json'}: 'models' must map stage names to scores")
        return report

    def _final(self) -> tuple[str | None, dict[str, Any]]:
        report = self._report()
        name = report.get("final_stage")
        return name, report["models"].get(name) or {}

    def facts(self) -> dict[str, str]:
        name, row = self._final()
        if name is None:
            return {}
        arch = _architecture(self.run, self.run.path / name) if (self.run.path / name).is_dir() else None
        out = {"model": f"{name} stage" + (f" ({Path(arch).stem})" if arch else "")}
        out["image size"] = f"{self._report().get('imgsz', DASH)} px"
        for key, label in (("map50", "mAP50"), ("map50_95", "mAP50-95"), ("cls_accuracy", "type accuracy"),
                           ("typed_map50", "typed mAP50")):
            if row.get(key) is not None:
                out[label] = _score(row[key])
        if row.get("latency_ms") is not None:
            out["PyTorch latency"] = f"{row['latency_ms']:.1f} ms"
        return out

    def render(self) -> Html:
        from mhyolo.pipeline.report import COLUMNS

        report = self._report()
        final = report.get("final_stage")
        columns = [c for c in COLUMNS if c[0] != "latency_ms"]
        headers = ["stage", *(label for _, label in columns), "P", "R", "ms (PyTorch, 1 img)"]
        rows, classes = [], []
        for name, row in report["models"].items():
            cells = [name + (" (final)" if name == final else "")]
            cells += [number(row.get(key)) for key, _ in columns]
            cells += [number(row.get("precision")), number(row.get("recall")), number(row.get("latency_ms"), 1)]
            rows.append(cells)
            classes.append("final" if name == final else None)
        parts = [paragraph(f"Each stage's best checkpoint scored on the same validation split at "
                           f"{report.get('imgsz', '?')} px. \"ball\" mAP is class-agnostic; type columns need a "
                           "type head (or the types as classes, the baseline); latency: PyTorch FP32, one image, "
                           "the stages timed interleaved in one process."),
                 table(headers, rows, classes)]
        overheads = [f"{label} ×{report[key]:.3f}" for key, label in
                     (("head_overhead", "type head"), ("image_head_overhead", "image type head"))
                     if isinstance(report.get(key), (int, float))]
        if overheads:
            parts.append(paragraph("Latency over the detector alone (same run): " + ", ".join(overheads) + "."))
        parts.append(self._per_type(final, report["models"].get(final) or {}))
        return join(parts)

    @staticmethod
    def _per_type(name: str | None, row: dict[str, Any]) -> Html:
        per_type = row.get("per_type")
        if not isinstance(per_type, dict) or not per_type:
            return Html("")
        keys = ("precision", "recall", "f1", "support")
        rows = [[type_name, *(number(scores.get(k)) if k != "support" else str(scores.get(k, DASH)) for k in keys)]
                for type_name, scores in per_type.items() if isinstance(scores, dict)]
        return join([tag("h3", f"Types of the final model ({name}), per matched ball"),
                     table(["type", "precision", "recall", "F1", "matched balls"], rows)])


# -------------------------------------------------------------- distillation
@register
class Distillation(Section):
    """The distillation stage's evaluate-and-filter: every group's fitness over the seeds and the choice."""

    key, title, kind = "distill", "Distillation", None

    def _decision(self) -> dict[str, Any] | None:
        report = self.run.json("report.json")
        decision = report.get("distill") if isinstance(report, dict) else None
        return decision if isinstance(decision, dict) and isinstance(decision.get("groups"), dict) else None

    def available(self) -> bool:
        return self._decision() is not None

    def facts(self) -> dict[str, str]:
        decision = self._decision() or {}
        return {"distillation": str(decision.get("chosen", DASH))}

    def render(self) -> Html:
        decision = self._decision() or {}
        chosen = decision.get("chosen")
        headers = ["model", "runs", "fitness per seed", "mean", "spread"]
        rows, classes = [], []
        for name, group in decision["groups"].items():
            runs = group.get("runs") or []
            rows.append([name + (" (kept)" if name == chosen else ""), ", ".join(str(r) for r in runs),
                         ", ".join(number(v, 4) for v in group.get("fitness") or []),
                         number(group.get("mean"), 4), number(group.get("spread"), 4)])
            classes.append("final" if name == chosen else None)
        return join([paragraph("The student without distillation and with each distillation variant, the same "
                               "data, epochs and seeds, scored on the validation split; fitness is 0.1 x mAP50 + "
                               "0.9 x mAP50-95 of the typed mAP (detection and type together). A distilled "
                               "student is kept only if its mean beats the undistilled one's by more than the "
                               "seed-to-seed spread."),
                     table(headers, rows, classes), paragraph(tag("strong", "Choice: "), decision.get("reason", ""))])


# ----------------------------------------------------------------- benchmark
@register
class Benchmark(Section):
    """`benchmark.json` of `mhyolo benchmark` (in the run, or the pipeline's `benchmark/`)."""

    key, title, kind = "benchmark", "Every format", "benchmark"
    PLACES = ("benchmark/benchmark.json", "benchmark.json")

    def _relative(self) -> str | None:
        return next((p for p in self.PLACES if self.run.file(p)), None)

    def available(self) -> bool:
        return self._relative() is not None

    def _rows(self) -> tuple[dict[str, Any], list[Any]]:
        from mhyolo.bench.report import Row

        relative = self._relative()
        data = self.run.mapping(relative, ("settings", "rows"))
        known = {f.name for f in fields(Row)}
        rows = []
        for i, row in enumerate(data["rows"]):
            try:
                rows.append(Row(**{k: v for k, v in row.items() if k in known}))
            except (TypeError, AttributeError) as exc:
                raise DataError(f"{self.run.path / relative}: rows[{i}]: {exc}") from None
        return data, rows

    def facts(self) -> dict[str, str]:
        _, rows = self._rows()
        timed = [r for r in rows if r.status == "ok" and r.latency_median_ms and r.model == "model"]
        if not timed:
            return {}
        fastest = min(timed, key=lambda r: r.latency_median_ms)
        e2e = f", {fastest.e2e_median_ms:.1f} ms end to end" if fastest.e2e_median_ms else ""
        return {"fastest format": f"{fastest.title}, {fastest.latency_median_ms:.1f} ms model call{e2e}"}

    def render(self) -> Html:
        from mhyolo.bench.report import (ACCURACY_KEYS, ACCURACY_LABELS, TIMING_HEAD, accuracy_note, machine_line,
                                         timing_cells, timing_description)

        data, rows = self._rows()
        settings = data["settings"]
        headers = ["format", "file", "MB", *TIMING_HEAD]
        for key in ACCURACY_KEYS:
            headers += [ACCURACY_LABELS[key], "Δ"]
        headers.append("note")
        cells, classes = [], []
        for row in rows:
            line = [row.label, code(Path(row.file).name) if row.file else DASH]
            if row.status != "ok":
                line += [DASH] * (len(headers) - 3) + [f"skipped: {row.reason}"]
            else:
                line += [number(row.size_mb, 1), *timing_cells(row)]
                for key in ACCURACY_KEYS:
                    line += [number(getattr(row, key)), signed((row.delta or {}).get(key))]
                line.append(row.note or "")
            cells.append(line)
            classes.append("skipped" if row.status != "ok" else None)
        data_part = [", data ", code(settings["data"]), " (val split)"] if settings.get("data") else [", no dataset"]
        timing = timing_description({"runs": "?", "warmup": "?", "threads": "?", **settings})
        intro = paragraph(
            f"Machine: {machine_line(settings)}. Weights ", code(settings.get("weights", "?")), *data_part,
            f", {settings.get('imgsz', '?')} px. Timing: {timing} Δ: change against the same model's "
            "PyTorch FP32 row.")
        unscored = accuracy_note(settings)
        parts = [intro, *([paragraph(unscored)] if unscored else []),
                 table(headers, cells, classes, text_columns=(len(headers) - 1,))]
        overhead = data.get("head_overhead") or {}
        if overhead:
            titles = {r.format: r.title for r in rows}
            parts.append(paragraph("Type-head overhead (model / detector median model call, same run): "
                                   + ", ".join(f"{titles.get(fmt, fmt)} ×{ratio:.3f}"
                                               for fmt, ratio in overhead.items()) + "."))
        chart = self.run.path / Path(self._relative()).with_name("benchmark.png")
        if chart.is_file():
            parts.append(figure(chart, "Model call and end-to-end time per format (bar: median, whisker: p90) and "
                                "accuracy against latency.",
                                str(chart.relative_to(self.run.path))))
        return join(parts)


# ---------------------------------------------------------- cross-validation
@register
class Crossval(Section):
    """`crossval.json` of `mhyolo crossval`: each source held out in turn."""

    key, title, kind = "crossval", "Cross-validation", "cross-validation"

    def available(self) -> bool:
        return self.run.file("crossval.json") is not None

    def _summary(self) -> dict[str, Any]:
        summary = self.run.mapping("crossval.json", ("folds", "imgsz"))
        for name, fold in summary["folds"].items():
            if not isinstance(fold, dict) or not isinstance(fold.get("scores"), dict):
                raise DataError(f"{self.run.path / 'crossval.json'}: fold {name!r} has no 'scores'")
        return summary

    def _mean(self, size: int) -> dict[str, float | None]:
        from mhyolo.pipeline.crossval_report import mean_row

        folds = self._summary()["folds"]
        return mean_row([f["scores"][str(size)] for f in folds.values() if str(size) in f["scores"]])

    def facts(self) -> dict[str, str]:
        summary = self._summary()
        train = summary.get("train") or {}
        mean = self._mean(summary["imgsz"])
        out = {"model": Path(str(train["model"])).stem if train.get("model") else DASH,
               "held-out sources": str(len(summary["folds"])),
               "image size": f"{summary['imgsz']} px"}
        for key, label in (("map50", "held-out mAP50 (mean)"), ("map50_95", "held-out mAP50-95 (mean)"),
                           ("cls_accuracy", "held-out type acc (mean)")):
            if mean.get(key) is not None:
                out[label] = _score(mean[key])
        return out

    def render(self) -> Html:
        from mhyolo.pipeline.crossval_report import COLUMNS, MEAN

        summary = self._summary()
        folds = summary["folds"]
        train = summary.get("train") or {}
        sizes = sorted({int(s) for fold in folds.values() for s in fold["scores"]},
                       key=lambda s: (s != summary["imgsz"], s))
        parts = [paragraph("Recipe ", code(summary.get("recipe", "?")), f", seed {summary.get('seed', '?')}, "
                           f"trained at {summary['imgsz']} px for {train.get('epochs', '?')} epochs (model ",
                           code(train.get("model", "?")), "). Each row: trained on the other sources (near-duplicates "
                           "of the held-out images removed), scored on every image of the held-out source; \"ball\" "
                           "mAP is class-agnostic; type columns count only types seen in training.")]
        headers = ["held-out source", "train / val imgs", "test imgs (negatives)", *(label for _, label in COLUMNS)]
        for size in sizes:
            rows, classes = [], []
            for name, fold in folds.items():
                row = fold["scores"].get(str(size))
                if row is None:
                    continue
                counts = fold.get("counts") or {}
                split = lambda s, k="images": (counts.get(s) or {}).get(k, "?")  # noqa: E731
                rows.append([name, f"{split('train')} / {split('val')}",
                             f"{split('test')} ({split('test', 'negatives')})",
                             *(number(row.get(key)) for key, _ in COLUMNS)])
                classes.append(None)
            mean = self._mean(size)
            rows.append([MEAN, "", "", *(number(mean[key]) for key, _ in COLUMNS)])
            classes.append("mean")
            parts += [tag("h3", f"Scored at {size} px"), table(headers, rows, classes)]
        chart = self.run.file("crossval.png")
        if chart:
            parts.append(figure(chart, "Held-out mAP50 and mAP50-95 per source and their mean.", "crossval.png"))
        return join(parts)


# ------------------------------------------------------------------- dataset
@register
class Dataset(Section):
    """The dataset build report (`mhyolo data build`): the run's `data/` or the run itself."""

    key, title, kind = "data", "Dataset", "dataset"
    PLACES = ("data/report.json", "report.json")

    def _relative(self) -> str | None:
        for place in self.PLACES:
            data = self.run.json(place) if self.run.file(place) else None
            if isinstance(data, dict) and "counts" in data and "classes" in data:
                return place
        return None

    def available(self) -> bool:
        return self._relative() is not None

    def facts(self) -> dict[str, str]:
        counts = self.run.json(self._relative())["counts"]
        images = {split: sum(c.get("images", 0) for c in counts.get(split, {}).values()) for split in ("train", "val")}
        return {"dataset": f"{images['train']} train / {images['val']} val images"}

    def render(self) -> Html:
        relative = self._relative()
        report = self.run.json(relative)
        counts = report["counts"]
        names = [*report["classes"], "negative"]
        rows = []
        for name in names:
            cells = [counts.get(split, {}).get(name, {}) for split in ("train", "val")]
            if name == "negative" and not any(c.get("images") for c in cells):
                continue
            rows.append([name, *(f"{c.get('images', 0)} ({c.get('boxes', 0)})" for c in cells)])
        drops = report.get("drop_counts") or {}
        parts = [paragraph(f"Seed {report.get('seed', '?')}; images (boxes) per class and split."),
                 table(["class", "train", "val"], rows),
                 paragraph("Dropped images: " + (", ".join(f"{k} {v}" for k, v in drops.items()) or "none") + ".")]
        plot = (self.run.path / relative).with_name("box_sizes.png")
        if plot.is_file():
            parts.append(figure(plot, "Box width and height as a share of the image, per class.",
                                str(plot.relative_to(self.run.path))))
        return join(parts)


# ------------------------------------------------------------- training runs
# The figures a training run leaves (train/report.py, eval/type_metrics.py), in page order.
TRAINING_FIGURES = {
    "results.png": "Training curves: every column of results.csv against epoch.",
    "pr_curve.png": "Precision-recall at IoU 0.5 of the best checkpoint on the val split.",
    "typed_pr_curve.png": "Precision-recall with the ball types as classes (typed mAP).",
    "type_confusion_matrix.png": "Type confusion per matched ball (rows: true type).",
    "image_type_confusion_matrix.png": "Type confusion per image, by its largest box (rows: true type).",
    "val_predictions.png": "Validation images: ground truth (green, left) beside the predictions at score ≥ 0.25.",
}


@register
class Training(Section):
    """Every training run folder in the run: its settings and figures, one block each."""

    key, title, kind = "training", "Training runs", "training run"

    def available(self) -> bool:
        return bool(self.run.training_folders())

    def _order(self) -> list[Path]:
        """Pipeline stages in their report's order, then the rest by path."""
        folders = self.run.training_folders()
        report = self.run.json("report.json") if self.run.file("report.json") else None
        stages = list(report.get("models", {})) if isinstance(report, dict) else []
        rank = {name: i for i, name in enumerate(stages)}
        return sorted(folders, key=lambda p: (rank.get(p.name, len(rank)), str(p)))

    def _final(self) -> str | None:
        report = self.run.json("report.json") if self.run.file("report.json") else None
        return report.get("final_stage") if isinstance(report, dict) else None

    def facts(self) -> dict[str, str]:
        folders = self.run.training_folders()
        if folders != [self.run.path]:
            return {}
        info = self._info(self.run.path)
        return {key: info[key] for key in ("model", "epochs", "image size") if key in info}

    def render(self) -> Html:
        folders = self._order()
        final = self._final()
        blocks = [self._block(folder, open_=len(folders) == 1 or folder.name == final, final=folder.name == final)
                  for folder in folders]
        return join([paragraph("Each run's settings and the plots it wrote; open a run to see them."), *blocks])

    def _info(self, folder: Path) -> dict[str, str]:
        relative = folder.relative_to(self.run.path)
        config = self.run.yaml(relative / "config.yaml") or {}
        done = self.run.json(relative / "done.json") or {}
        config = config if isinstance(config, dict) else {}
        info: dict[str, str] = {}
        if config.get("model"):
            info["model"] = Path(str(config["model"])).stem
        if config.get("weights"):
            info["started from"] = Path(str(config["weights"])).name
        epochs = done.get("epochs") if isinstance(done, dict) else None
        info["epochs"] = str(epochs if epochs is not None else self._epochs(folder))
        if config.get("imgsz"):
            info["image size"] = f"{config['imgsz']} px"
        if config.get("freeze"):
            info["frozen"] = str(config["freeze"])
        if isinstance(done, dict) and isinstance(done.get("best_fitness"), (int, float)):
            info["best fitness"] = f"{done['best_fitness']:.3f}"
        return info

    def _epochs(self, folder: Path) -> int:
        path = folder / RESULTS_CSV
        self.run.note(path)
        with path.open(newline="", encoding="utf-8") as f:
            return max(0, sum(1 for row in csv.reader(f) if any(c.strip() for c in row)) - 1)

    def _block(self, folder: Path, open_: bool, final: bool) -> Html:
        relative = folder.relative_to(self.run.path)
        name = "this run" if folder == self.run.path else relative.as_posix()
        info = self._info(folder)
        summary = tag("summary", join([tag("span", name + (" (final model)" if final else ""), class_="run-name"),
                                       " ", tag("span", " · ".join(f"{k} {v}" for k, v in info.items()),
                                                class_="muted")]))
        known = [folder / n for n in TRAINING_FIGURES if (folder / n).is_file()]
        others = sorted(p for p in folder.glob("*.png") if p.name not in TRAINING_FIGURES)
        shown = [figure(p, TRAINING_FIGURES.get(p.name, p.stem.replace("_", " ") + "."),
                        (relative / p.name).as_posix()) for p in [*known, *others]]
        body = figures(shown) if shown else paragraph("No figures in ", code(relative.as_posix() or "."), ".")
        return Html(f'<details class="run"{" open" if open_ else ""}>') + summary + body + Html("</details>")
