"""Stages: `RUN/report.json` of `mhyolo pipeline`, every stage's model on the same val split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mhyolo.eval.results import columns
from mhyolo.pipeline.run_report import RunReport
from mhyolo.report.html import DASH, Html, join, number, paragraph, table, tag
from mhyolo.report.run_folder import RunFolder
from mhyolo.report.sections.base import Section, register, score


def _architecture(run: RunFolder, folder: Path) -> str | None:
    """The architecture a training folder trained (its config.yaml)."""
    config = run.yaml(folder.relative_to(run.path) / "config.yaml")
    return str(config["model"]) if isinstance(config, dict) and config.get("model") else None


@register
class Stages(Section):
    """`RUN/report.json` of `mhyolo pipeline`: every stage's model on the same val split."""

    key, title, kind = "stages", "Stages", "pipeline run"

    def available(self) -> bool:
        return self.run.pipeline_report() is not None

    def _report(self) -> RunReport:
        report = self.run.pipeline_report()
        assert report is not None, "rendered only when available"
        return report

    def facts(self) -> dict[str, str]:
        report = self._report()
        name, row = report.final_stage, report.final_row()
        if name is None:
            return {}
        arch = _architecture(self.run, self.run.path / name) if (self.run.path / name).is_dir() else None
        out = {"model": f"{name} stage" + (f" ({Path(arch).stem})" if arch else "")}
        out["image size"] = f"{report.imgsz if report.imgsz is not None else DASH} px"
        for key, label in columns("map50", "map50_95", "cls_accuracy", "typed_map50"):
            if row.get(key) is not None:
                out[label] = score(row[key])
        if row.get("latency_ms") is not None:
            out["PyTorch latency"] = f"{row['latency_ms']:.1f} ms"
        return out

    def render(self) -> Html:
        from mhyolo.pipeline.report import COLUMNS

        report = self._report()
        final = report.final_stage
        columns = [c for c in COLUMNS if c[0] != "latency_ms"]
        headers = ["stage", *(label for _, label in columns), "P", "R", "ms (PyTorch, 1 img)"]
        rows, classes = [], []
        for name, row in report.models.items():
            cells = [name + (" (final)" if name == final else "")]
            cells += [number(row.get(key)) for key, _ in columns]
            cells += [number(row.get("precision")), number(row.get("recall")), number(row.get("latency_ms"), 1)]
            rows.append(cells)
            classes.append("final" if name == final else None)
        parts = [paragraph(f"Each stage's best checkpoint scored on the same validation split at "
                           f"{report.imgsz if report.imgsz is not None else '?'} px. \"ball\" mAP is class-agnostic; type columns need a "
                           "type head (or the types as classes, the baseline); latency: PyTorch FP32, one image, "
                           "the stages timed interleaved in one process."),
                 table(headers, rows, classes)]
        overheads = [f"{label} ×{value:.3f}" for value, label in
                     ((report.head_overhead, "type head"), (report.image_head_overhead, "image type head"))
                     if value is not None]
        if overheads:
            parts.append(paragraph("Latency over the detector alone (same run): " + ", ".join(overheads) + "."))
        parts.append(self._per_size(report.models))
        parts.append(self._per_type(final, report.final_row()))
        return join(parts)

    @staticmethod
    def _per_size(models: dict[str, Any]) -> Html:
        """Each stage's mAP50 per ball size with its ground-truth boxes; nothing for a report made before."""
        from mhyolo.eval.size_bins import SIZE_BINS, bin_cells

        rows = [[name, *bin_cells(row["size_bins"])] for name, row in models.items()
                if isinstance(row, dict) and isinstance(row.get("size_bins"), dict)]
        if not rows:
            return Html("")
        return join([tag("h3", "Per ball size"),
                     paragraph("mAP50 on the same split per ball size (sqrt of the box area in the original "
                               f"image's pixels), ground-truth boxes in brackets; {DASH}: no ball of that size."),
                     table(["stage", *(b.title for b in SIZE_BINS)], rows)])

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
