"""Dataset: the build report of `mhyolo data build` and its box-size plot."""

from __future__ import annotations

from mhyolo.report.html import Html, figure, join, paragraph, table
from mhyolo.report.sections.base import Section, register


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
