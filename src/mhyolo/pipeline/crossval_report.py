"""The cross-validation report: one row per held-out source and their mean, as
`crossval.json`, a Markdown table (`crossval.md`) and a bar chart (`crossval.png`); the same
per ball size (`eval.size_bins`) where the folds were scored per size."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mhyolo.eval.size_bins import SIZE_BINS, bin_cells
from mhyolo.eval.results import columns

COLUMNS = columns("map50", "map50_95", "precision", "recall", "false_positives_per_negative_image", "cls_accuracy",
                  "typed_map50")
MEAN = "mean"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def mean_row(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Plain mean of each column over the folds that have it (every source weighs the same)."""
    out: dict[str, float | None] = {}
    for key, _ in COLUMNS:
        values = [v for v in (_number(r.get(key)) for r in rows) if v is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def mean_bins(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ball-size bin: mAP50 and mAP50-95 as the plain mean over the folds with ground truth in the bin
    (None where no fold has any), boxes summed; empty when no fold was scored per size."""
    scored = [r["size_bins"] for r in rows if isinstance(r.get("size_bins"), dict)]
    if not scored:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for size_bin in SIZE_BINS:
        entries = [b[size_bin.name] for b in scored if isinstance(b.get(size_bin.name), dict)]
        out[size_bin.name] = {"boxes": sum(int(e.get("boxes") or 0) for e in entries)}
        for key in ("map50", "map50_95"):
            values = [v for v in (_number(e.get(key)) for e in entries) if v is not None]
            out[size_bin.name][key] = sum(values) / len(values) if values else None
    return out


def size_bin_rows(folds: dict[str, Any], size: int, detail: bool) -> list[list[str]] | None:
    """The per-ball-size table at `size`: one row per fold scored per size, then the mean over them
    (cells from `size_bins.bin_cell`); None when no fold at this size was."""
    rows = {name: fold["scores"][str(size)] for name, fold in folds.items()
            if isinstance(fold["scores"].get(str(size), {}).get("size_bins"), dict)}
    if not rows:
        return None
    mean = mean_bins(list(rows.values()))
    table = [[name, *bin_cells(row["size_bins"], detail)] for name, row in rows.items()]
    return table + [[MEAN, *bin_cells(mean, detail)]]


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(summary: dict[str, Any]) -> str:
    folds = summary["folds"]
    sizes = sorted({int(s) for fold in folds.values() for s in fold["scores"]}, key=lambda s: (s != summary["imgsz"], s))
    train = summary.get("train", {})
    lines = [f"# Leave-one-source-out cross-validation", "",
             f"Recipe `{summary['recipe']}`, seed {summary['seed']}, trained at {summary['imgsz']} px for "
             f"{train.get('epochs', '?')} epochs (model `{train.get('model', '?')}`). Each row: trained on the other "
             "sources (near-duplicates of the held-out images removed), scored on every image of the held-out "
             "source; \"ball\" mAP is class-agnostic; type columns count only types seen in training.", ""]
    for size in sizes:
        lines += [f"## Scored at {size} px", "",
                  "| held-out source | train / val imgs | test imgs (negatives) | "
                  + " | ".join(label for _, label in COLUMNS) + " |",
                  "|---|---|---|" + "---|" * len(COLUMNS)]
        rows = []
        for name, fold in folds.items():
            row = fold["scores"].get(str(size))
            if row is None:
                continue
            rows.append(row)
            counts = fold["counts"]
            lines.append(f"| {name} | {counts['train']['images']} / {counts['val']['images']} | "
                         f"{counts['test']['images']} ({counts['test']['negatives']}) | "
                         + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
        mean = mean_row(rows)
        lines.append(f"| **{MEAN}** | | | " + " | ".join(f"**{_cell(mean[key])}**" for key, _ in COLUMNS) + " |")
        lines.append("")
        lines += _size_bin_markdown(folds, size)
    if summary.get("distill"):
        lines += distill_markdown(summary["distill"], list(folds))
    return "\n".join(lines)


def _size_bin_markdown(folds: dict[str, Any], size: int) -> list[str]:
    from mhyolo.data.report import format_table

    rows = size_bin_rows(folds, size, detail=True)
    if rows is None:
        return []
    rows[-1] = [f"**{cell}**" for cell in rows[-1]]
    return [f"Per ball size at {size} px (sqrt of the box area in the original image's pixels): "
            "mAP50 / mAP50-95 (ground-truth boxes); the mean is over the folds with balls of that size, "
            "boxes summed; – : no ball of that size.", "",
            format_table(["held-out source", *(b.title for b in SIZE_BINS)], rows), ""]


DISTILL_COLUMNS = columns("map50", "map50_95", "cls_accuracy", "typed_map50", "fitness")


def distill_table(distill: dict[str, Any], sources: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per candidate: held-out mAP50 per source, then the means over folds as mean (spread) over
    seeds, and the training time of all folds together (one seed)."""
    from mhyolo.pipeline.distill_tables import spread_cell

    headers = ["candidate", "seeds", *(f"{s} mAP50" for s in sources), *(label for _, label in DISTILL_COLUMNS),
               "training min (all folds)"]
    rows = []
    for name, cand in distill["candidates"].items():
        seconds = cand.get("train_seconds")
        rows.append([name, str(len(cand["runs"])),
                     *(_cell(cand["per_fold"].get(s, {}).get("map50")) for s in sources),
                     *(spread_cell(cand[key]) for key, _ in DISTILL_COLUMNS),
                     "–" if seconds is None else f"{seconds / 60:.1f}"])
    return headers, rows


def distill_markdown(distill: dict[str, Any], sources: list[str]) -> list[str]:
    from mhyolo.data.report import format_table

    lines = [f"## Distillation on the held-out sources (scored at {distill['imgsz']} px)", "",
             "Each fold trains its own teacher on the other sources, then the student with and without each "
             "distillation per seed; each cell: the mean over the held-out sources, as mean (max − min) over the "
             "seeds. Fitness is the filter's (typed mAP where every held-out type was seen, else ball mAP).", "",
             format_table(*distill_table(distill, sources))]
    decision = distill.get("decision")
    lines += ["", f"Decision on the held-out sources: **{decision['chosen']}** — {decision['reason']}."
              if decision else "Decision: not every run has been scored yet.", ""]
    return lines


def plot(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folds = summary["folds"]
    sizes = sorted({int(s) for fold in folds.values() for s in fold["scores"]})
    names = list(folds) + [MEAN]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / max(len(sizes), 1)
    x = np.arange(len(names))
    for ax, (key, label) in zip(axes, COLUMNS[:2]):
        for k, size in enumerate(sizes):
            rows = [folds[n]["scores"].get(str(size), {}) for n in folds]
            values = [_number(r.get(key)) or 0.0 for r in rows]
            values.append(mean_row(rows)[key] or 0.0)
            bars = ax.bar(x + (k - (len(sizes) - 1) / 2) * width, values, width, label=f"scored at {size}")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, names)
        ax.set_title(f"held-out source: {label}")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score on the source never seen in training")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"leave-one-source-out, trained at {summary['imgsz']} px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_crossval_report(out: Path, summary: dict[str, Any]) -> dict[str, Path]:
    folds = summary["folds"]
    size = str(summary["imgsz"])
    rows = [f["scores"][size] for f in folds.values() if size in f["scores"]]
    summary = {**summary, "mean": mean_row(rows), "size_bins_mean": mean_bins(rows)}
    paths = {"json": out / "crossval.json", "markdown": out / "crossval.md", "plot": out / "crossval.png"}
    paths["json"].write_text(json.dumps(summary, indent=2))
    paths["markdown"].write_text(markdown(summary))
    plot(summary, paths["plot"])
    return paths
