"""Cross-validation: `crossval.json` of `mhyolo crossval`, each source held out in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mhyolo.errors import DataError
from mhyolo.eval.results import columns
from mhyolo.report.html import DASH, Html, code, figure, join, number, paragraph, table, tag
from mhyolo.report.sections.base import Section, register, score


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
        for key, label in columns("map50", "map50_95", "cls_accuracy"):
            if mean.get(key) is not None:
                out[f"held-out {label} (mean)"] = score(mean[key])
        return out

    def render(self) -> Html:
        from mhyolo.eval.size_bins import SIZE_BINS
        from mhyolo.pipeline.crossval_report import COLUMNS, MEAN, size_bin_rows

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
            by_size = size_bin_rows(folds, size, detail=False)
            if by_size is not None:
                parts += [paragraph(f"Per ball size at {size} px (sqrt of the box area in the original image's "
                                    "pixels): mAP50 (ground-truth boxes); the mean is over the folds with balls of "
                                    "that size."),
                          table(["held-out source", *(b.title for b in SIZE_BINS)], by_size,
                                [None] * (len(by_size) - 1) + ["mean"])]
        chart = self.run.file("crossval.png")
        if chart:
            parts.append(figure(chart, "Held-out mAP50 and mAP50-95 per source and their mean.", "crossval.png"))
        distill = summary.get("distill")
        if isinstance(distill, dict) and isinstance(distill.get("candidates"), dict):
            parts += self._distillation(distill, list(folds))
        return join(parts)

    def _distillation(self, distill: dict[str, Any], sources: list[str]) -> list[Html]:
        from mhyolo.pipeline.crossval_report import distill_table

        headers, rows = distill_table(distill, sources)
        decision = distill.get("decision") or {}
        return [tag("h3", f"Distillation on the held-out sources (scored at {distill.get('imgsz', '?')} px)"),
                paragraph("Each fold trains its own teacher, then the student with and without each distillation "
                          "per seed; cells: mean over the held-out sources, as mean (max − min) over seeds."),
                table(headers, rows),
                paragraph("Decision on the held-out sources: ", tag("strong", decision["chosen"]), f" — {decision['reason']}.")
                if decision else paragraph("Decision: not every run has been scored yet.")]
