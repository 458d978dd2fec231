"""What an adaptation run did, for a person: `report.md` (and `report.json` with the same figures):
the inputs, the keep threshold and how it was chosen, what each round's teacher kept, ignored and
dropped, the contact sheet, and, with labelled validation data, the model before and after
(`before_after.png`) on that split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mhyolo.pipeline.report import COLUMNS
from mhyolo.eval.results import columns

FIGURE_METRICS = columns("precision", "recall", "map50", "map50_95", "typed_map50", "cls_accuracy")


def before_after_figure(before: dict[str, Any], after: dict[str, Any], path: Path) -> Path:
    """Grouped bars, one pair per metric both rows have."""
    metrics = [(key, label) for key, label in FIGURE_METRICS
               if isinstance(before.get(key), (int, float)) and isinstance(after.get(key), (int, float))]
    fig = Figure(figsize=(1.3 * max(len(metrics), 2) + 1.5, 3.6), dpi=100)
    ax = fig.subplots()
    xs = range(len(metrics))
    width = 0.38
    for offset, (row, name, colour) in enumerate(((before, "before", "#9aa5b1"), (after, "after", "#2f7ed8"))):
        values = [float(row[key]) for key, _ in metrics]
        bars = ax.bar([x + (offset - 0.5) * width for x in xs], values, width, label=name, color=colour)
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{value:.2f}", ha="center", fontsize=7)
    ax.set_xticks(list(xs), [label for _, label in metrics])
    ax.set_ylim(0, 1.08)
    ax.set_title("labelled val split: the model before and after adaptation", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _shown(path: str, run: Path) -> str:
    """A path inside the run relative to it (`round1/student/...`), any other by its name."""
    try:
        return str(Path(path).relative_to(run))
    except ValueError:
        return Path(path).name


def markdown(summary: dict[str, Any], run: Path) -> str:
    lines = ["# mhyolo adapt", "",
             f"- model: `{summary['weights']}`", f"- target: `{summary['images']}` "
             f"({summary['targets']} images{', sampled at ' + str(summary['fps']) + ' frames/s' if summary['video'] else ''})",
             f"- labelled data: `{summary['labelled']}`" if summary["labelled"] else "- labelled data: none",
             f"- input size {summary['imgsz']}, teacher `{summary['teacher']}`, {summary['epochs']} epochs per round, "
             f"{len(summary['rounds'])} round(s)",
             f"- left out: {summary['duplicates']['of_target']} near-duplicate target images, "
             f"{summary['duplicates']['of_labelled']} near-duplicates of labelled images, "
             f"{summary['unreadable']} unreadable", ""]
    lines += ["## Rounds", "", "| round | teacher | keep threshold | how | images | kept boxes | ignore regions | "
              "alone in time | images without a box |", "|---|---|---|---|---|---|---|---|---|"]
    for number, row in enumerate(summary["rounds"], start=1):
        threshold, pseudo = row["threshold"], row["pseudo"]
        lines.append(f"| {number} | `{_shown(row['teacher'], run)}` | {threshold['keep']:.3f} | {threshold['how']} | "
                     f"{pseudo['images']} | {pseudo['kept']} | {pseudo['ignored']} | {pseudo['lonely']} | "
                     f"{pseudo['negatives']} |")
    lines += ["", "Keep threshold: " + summary["rounds"][-1]["threshold"]["reason"] + ".", ""]
    lines += [f"**Round {number} not adapted**: {row['skipped']}.\n" for number, row in enumerate(summary["rounds"], 1)
              if row.get("skipped")]
    evaluation = summary.get("evaluation")
    if evaluation:
        lines += ["## Before and after", "", f"On `{evaluation['data']}` (val split; whole images at "
                  f"{evaluation['imgsz']}, as `mhyolo val` scores them).", "",
                  "| model | P | R | " + " | ".join(label for _, label in COLUMNS[:-1]) + " |",
                  "|---|---|---|" + "---|" * (len(COLUMNS) - 1)]
        for name in ("before", "after"):
            row = evaluation[name]
            lines.append(f"| {name} | {_cell(row.get('precision'))} | {_cell(row.get('recall'))} | "
                         + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS[:-1]) + " |")
        lines += ["", "![before and after](before_after.png)", ""]
    decision = summary.get("decision")
    if decision:
        verdict = "the adapted model" if decision["adapted"] else "**the given model, not the adapted one**"
        lines += [f"`model.safetensors` is {verdict}: {decision['reason']}.", ""]
    else:
        lines += ["No labelled validation data: no before/after scores (give `--labelled DATA.yaml`).", ""]
    lines += ["## Pseudo-labels", "",
              "`pseudo/` is a YOLO dataset (`images/`, `labels/`, `data.yaml`, `classes.txt`). Judge it on the contact "
              "sheet; correct it in any tool that reads YOLO txt labels (CVAT, Label Studio, labelImg) and give the "
              "corrected folder back with `--labelled pseudo/data.yaml` into a new `--out`.", "",
              "![contact sheet](contact_sheet.png)", ""]
    return "\n".join(lines)


def write_report(run: Path, summary: dict[str, Any]) -> Path:
    (run / "report.json").write_text(json.dumps(summary, indent=2))
    evaluation = summary.get("evaluation")
    if evaluation:
        before_after_figure(evaluation["before"], evaluation["after"], run / "before_after.png")
    path = run / "report.md"
    path.write_text(markdown(summary, run), encoding="utf-8")
    return path
