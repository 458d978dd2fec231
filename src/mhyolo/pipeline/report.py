"""The pipeline's report: every stage's model scored on the same validation split, the
latency of the detector alone against the detector with its heads (same process, same
input), as `report.json` and a Markdown table in `report.md`, with each model's mAP per ball size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mhyolo.eval.size_bins import SIZE_BINS, bin_cells
from mhyolo.eval.results import columns, select
from mhyolo.pipeline.run_report import RunReport

COLUMNS = (*columns("map50", "map50_95", "cls_accuracy", "image_accuracy", "typed_map50", "typed_map50_95"),
           ("latency_ms", "ms (PyTorch, 1 img)"))
# the type figures a stage's row keeps (matrices and per-type tables included, for the report's sections)
TYPE_FIGURES = ("cls_accuracy", "detection_recall", "image_accuracy", "typed_map50", "typed_map50_95",
                "typed_per_type", "per_type", "confusion_matrix")


def score(weights: Path, data_yaml: Path, imgsz: int, classifier: Path | None = None) -> dict[str, Any]:
    """A stage's model (with a crop `classifier` behind it: the two-stage model) on the val split."""
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import score_split
    from mhyolo.model.weights import load_model

    crop_classifier = None
    if classifier is not None:
        from mhyolo.classify.backend import load_classifier

        crop_classifier = load_classifier(classifier)
    result = score_split(load_model(weights), load_data_spec(data_yaml), imgsz, progress=False,
                         classifier=crop_classifier)
    row: dict[str, Any] = {"weights": str(weights),
                           **select(result.part("detection"), ("map50", "map50_95", "precision", "recall")),
                           **result.part("size")}
    types = result.part("types")
    if types is not None:
        row.update(select(types, TYPE_FIGURES))
    return row


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1.0 else f"{value:.1f}"
    return str(value)


def markdown(rows: dict[str, dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", "| model | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def size_bin_markdown(rows: dict[str, dict[str, Any]]) -> str:
    """Each model's mAP50 / mAP50-95 (ground-truth boxes) per ball size; empty when no row has them."""
    from mhyolo.data.report import format_table

    scored = {name: row["size_bins"] for name, row in rows.items() if isinstance(row.get("size_bins"), dict)}
    if not scored:
        return ""
    table = format_table(["model", *(b.title for b in SIZE_BINS)],
                         [[name, *bin_cells(bins, detail=True)] for name, bins in scored.items()])
    return ("\n## Per ball size\n\nSize: the square root of the box area in the original image's pixels; "
            "mAP50 / mAP50-95 (ground-truth boxes); – : no ball of that size.\n\n" + table + "\n")


def write_report(run: Path, report: RunReport) -> tuple[Path, Path]:
    """`RUN/report.json` and its Markdown, `RUN/report.md`."""
    json_path, md_path = report.write(run), run / "report.md"
    rows = report.models
    text = markdown(rows, "mhyolo pipeline report")
    if report.head_overhead is not None:
        text += f"\nType head latency overhead (same run, interleaved): x{report.head_overhead:.3f}\n"
    text += size_bin_markdown(rows)
    if report.distill is not None:
        from mhyolo.pipeline.distill_tables import distill_markdown

        text += "\n" + distill_markdown(rows, report.distill)
    table = Path((report.benchmark or {}).get("markdown", ""))
    if table.is_file():
        text += "\n## Every format (mhyolo benchmark)\n\n" + table.read_text()
    md_path.write_text(text)
    return json_path, md_path
