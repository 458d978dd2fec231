"""Every format: `benchmark.json` of `mhyolo benchmark` and its chart."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from mhyolo.errors import DataError
from mhyolo.report.html import DASH, Html, code, figure, join, number, paragraph, signed, table, tag
from mhyolo.report.sections.base import Section, register


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
        from mhyolo.bench.report import (ACCURACY_LABELS, TIMING_HEAD, accuracy_keys, accuracy_note, machine_line,
                                         timing_cells, timing_description)

        data, rows = self._rows()
        settings = data["settings"]
        # narrow enough for a 1280-px page: the file under the format's name, each delta in its value's
        # cell, and every note (a skip's reason, a kernel note) numbered under the table
        keys = accuracy_keys(rows)
        headers = ["format", "MB", *TIMING_HEAD, *(ACCURACY_LABELS[key] for key in keys)]
        notes: list[str] = []
        cells, classes = [], []
        for row in rows:
            note = f"skipped: {row.reason}" if row.status != "ok" else row.note
            if note and note not in notes:
                notes.append(note)
            marker = [" ", tag("sup", str(notes.index(note) + 1))] if note else []
            name = join([row.label, *marker, *([Html("<br>"), code(Path(row.file).name)] if row.file else [])])
            if row.status != "ok":
                line = [name, *[DASH] * (len(headers) - 1)]
            else:
                line = [name, number(row.size_mb, 1), *timing_cells(row)]
                for key in keys:
                    delta = (row.delta or {}).get(key)
                    value = number(getattr(row, key))
                    line.append(value if delta is None else join([value, " ", tag("span", signed(delta),
                                                                                   class_="delta")]))
            cells.append(line)
            classes.append("skipped" if row.status != "ok" else None)
        data_part = [", data ", code(settings["data"]), " (val split)"] if settings.get("data") else [", no dataset"]
        timing = timing_description({"runs": "?", "warmup": "?", "threads": "?", **settings})
        intro = paragraph(
            f"Machine: {machine_line(settings)}. Weights ", code(settings.get("weights", "?")), *data_part,
            f", {settings.get('imgsz', '?')} px. Timing: {timing} The small signed figure beside a score: its "
            "change against the same model's PyTorch FP32 row; numbered notes under the table.")
        unscored = accuracy_note(settings)
        parts = [intro, *([paragraph(unscored)] if unscored else []), table(headers, cells, classes)]
        if notes:
            parts.append(tag("ol", join(tag("li", note) for note in notes), class_="notes"))
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
