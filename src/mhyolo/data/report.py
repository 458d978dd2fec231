"""The build report: what went into a dataset, what was left out and why.

Written beside the dataset as `report.json` (everything, for tools), `report.md`
(for people) and `box_sizes.png` (box width/height histograms per class). The
report holds no timestamps, so two builds of the same recipe and seed give the
same JSON; every image dropped is listed with its reason, so the counts add up:
images seen = images written + images dropped, per source.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.data.labels import boxes_from_bytes
from mhyolo.data.naming import NEGATIVE
from mhyolo.data.select import Duplicate, GroupStats
from mhyolo.data.sources import Drop

REPORT_JSON, REPORT_MD, BOX_PLOT = "report.json", "report.md", "box_sizes.png"
# Box width / height as a share of the image, in bins of 0.025.
SIZE_EDGES = [round(x, 3) for x in np.linspace(0.0, 1.0, 41)]
STAGE_ORDER = ("orphan-label", "verify", "same-stem", "mixed", "duplicate", "negatives", "sample", "balance")


@dataclass(slots=True)
class OutputImage:
    """One image written by a build."""

    file: str  # relative to the dataset folder, e.g. images/train/basketball_seed_balls_0001.jpg
    split: str
    cls: str  # target class name, or "negative"
    source: str
    origin: str  # the source file it was copied from
    group: int  # near-duplicate group id (shared by copies that must stay in one split)
    packed_boxes: bytes  # `boxes` as float32 bytes (kept for every image written)

    @property
    def boxes(self) -> np.ndarray:
        """(n, 5) [cls, cx, cy, w, h], read-only."""
        return boxes_from_bytes(self.packed_boxes)


class _Streamed(list):
    """A list that `json.dump` writes one made item at a time: its encoder walks a list (subclasses
    too) with a for loop, so the entries of 100,000 images are never all in memory at once."""

    def __init__(self, items: Sequence[Any], make: Callable[[Any], Any]) -> None:
        super().__init__()
        self._items, self._make = items, make

    def __iter__(self) -> Iterator[Any]:
        return map(self._make, self._items)

    def __len__(self) -> int:
        return len(self._items)


def _listed(items: Sequence[Any], make: Callable[[Any], Any]) -> list[Any]:
    return [make(item) for item in items]


def _image_entry(image: OutputImage) -> dict[str, Any]:
    return {"file": image.file, "split": image.split, "class": image.cls, "source": image.source,
            "origin": image.origin, "group": image.group, "boxes": len(image.boxes)}


@dataclass
class SourceSummary:
    path: str
    images_seen: int
    written: dict[str, int]  # split -> images
    drops: dict[str, int]  # stage -> images
    kept_boxes: dict[str, int]  # source class -> boxes kept
    dropped_boxes: dict[str, int]  # source class -> boxes dropped (class mapped to null)
    mixed: int  # images with boxes of several target classes


@dataclass
class BuildReport:
    """Everything a build decided; `to_dict` is the JSON report."""

    out: str
    classes: list[str]
    seed: int
    recipe: dict[str, Any]
    images: list[OutputImage]
    sources: dict[str, SourceSummary]
    drops: list[Drop]
    duplicates: list[Duplicate]
    groups: GroupStats
    per_class: int | None = None
    verify: dict[str, Any] = field(default_factory=dict)

    # ---- derived figures ----
    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """split -> class (or "negative") -> {"images", "boxes"}."""
        table: dict[str, dict[str, dict[str, int]]] = {}
        for split in ("train", "val"):
            rows = {name: {"images": 0, "boxes": 0} for name in [*self.classes, NEGATIVE]}
            for img in self.images:
                if img.split == split:
                    rows[img.cls]["images"] += 1
                    rows[img.cls]["boxes"] += len(img.boxes)
            table[split] = rows
        return table

    def boxes_per_image(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for split in ("train", "val"):
            hist = Counter(len(img.boxes) for img in self.images if img.split == split)
            out[split] = {str(k): hist[k] for k in sorted(hist)}
        return out

    def box_sizes(self) -> dict[str, Any]:
        """Histograms (and medians) of box width and height as a share of the image, per class."""
        result: dict[str, Any] = {"edges": SIZE_EDGES, "width": {}, "height": {}, "median_width": {},
                                  "median_height": {}}
        every = boxes_from_bytes(b"".join(img.packed_boxes for img in self.images))  # in image order
        for cls, name in enumerate(self.classes):
            arr = every[every[:, 0] == cls]
            for key, col in (("width", 3), ("height", 4)):
                result[key][name] = np.histogram(arr[:, col], bins=SIZE_EDGES)[0].tolist()
                result[f"median_{key}"][name] = round(float(np.median(arr[:, col])), 4) if len(arr) else None
        return result

    def drop_counts(self) -> dict[str, int]:
        counts = Counter(d.stage for d in self.drops)
        return {stage: counts[stage] for stage in STAGE_ORDER if counts[stage]}

    def to_dict(self) -> dict[str, Any]:
        return self._as_dict(_listed)

    def _as_dict(self, listing: Callable[[Sequence[Any], Callable[[Any], Any]], list[Any]]) -> dict[str, Any]:
        """The JSON report, with the per-drop and per-image lists made by `listing(items, make)`."""
        return {
            "out": self.out,
            "classes": self.classes,
            "seed": self.seed,
            "recipe": self.recipe,
            "per_class": self.per_class,
            "counts": self.counts(),
            "boxes_per_image": self.boxes_per_image(),
            "box_sizes": self.box_sizes(),
            "sources": {k: asdict(v) for k, v in self.sources.items()},
            "duplicates": {"groups": asdict(self.groups), "cross_source_dropped": [asdict(d) for d in self.duplicates]},
            "drop_counts": self.drop_counts(),
            "drops": listing(self.drops, asdict),
            "images": listing(self.images, _image_entry),
            "verify": self.verify,
        }

    # ---- text ----
    def summary_table(self) -> str:
        """Images (boxes) per class and split, for the terminal and the Markdown report."""
        counts = self.counts()
        rows = []
        for name in [*self.classes, NEGATIVE]:
            cells = [counts[s][name] for s in ("train", "val")]
            if name == NEGATIVE and not any(c["images"] for c in cells):
                continue
            total = {k: cells[0][k] + cells[1][k] for k in ("images", "boxes")}
            rows.append([name, *[f"{c['images']} ({c['boxes']})" for c in (*cells, total)]])
        tot = {s: {k: sum(v[k] for v in counts[s].values()) for k in ("images", "boxes")} for s in ("train", "val")}
        rows.append(["total", *[f"{tot[s]['images']} ({tot[s]['boxes']})" for s in ("train", "val")],
                     f"{tot['train']['images'] + tot['val']['images']} ({tot['train']['boxes'] + tot['val']['boxes']})"])
        return format_table(["class", "train img (boxes)", "val img (boxes)", "total img (boxes)"], rows)

    def summary_lines(self) -> list[str]:
        g = self.groups
        lines = [f"near-duplicates: {g.pairs} pairs in {g.groups} groups ({g.images} images, largest {g.largest}); "
                 f"{g.cross_source} groups span sources, {g.cross_split} span a source's own splits; "
                 f"{len(self.duplicates)} cross-source copies dropped"]
        drops = self.drop_counts()
        lines.append("dropped images: " + (", ".join(f"{k} {v}" for k, v in drops.items()) if drops else "none"))
        return lines

    def markdown(self) -> str:
        out = [f"# Dataset build report: {Path(self.out).name}", "",
               f"Seed {self.seed}; classes {', '.join(f'{i} {n}' for i, n in enumerate(self.classes))}"
               + (f"; {self.per_class} images per class" if self.per_class is not None else "") + ".", "",
               "## Images (boxes) per class and split", "", self.summary_table(), "", *self.summary_lines(), "",
               "## Sources", ""]
        rows = []
        for name, s in self.sources.items():
            drops = ", ".join(f"{k} {v}" for k, v in s.drops.items() if v) or "-"
            rows.append([name, s.images_seen, s.written.get("train", 0), s.written.get("val", 0), drops,
                         _fmt_counter(s.kept_boxes), _fmt_counter(s.dropped_boxes), s.mixed])
        out += [format_table(["source", "seen", "train", "val", "dropped images", "boxes kept", "boxes dropped",
                              "mixed"], rows), ""]
        out += ["## Boxes per image", ""]
        bpi = self.boxes_per_image()
        keys = sorted({int(k) for s in bpi.values() for k in s})
        out += [format_table(["split", *map(str, keys)], [[s, *[bpi[s].get(str(k), 0) for k in keys]] for s in bpi]),
                ""]
        sizes = self.box_sizes()
        out += ["## Box sizes (share of the image)", "", f"![box sizes]({BOX_PLOT})", "",
                format_table(["class", "median width", "median height"],
                             [[n, sizes["median_width"][n], sizes["median_height"][n]] for n in self.classes]), ""]
        out += ["## Dropped images", ""]
        for stage in STAGE_ORDER:
            items = [d for d in self.drops if d.stage == stage]
            if not items:
                continue
            out.append(f"### {stage} ({len(items)})")
            out.append("")
            if stage in ("sample", "balance", "negatives"):
                per = Counter((d.source, d.reason) for d in items)
                out += [f"- {src}: {n} x {reason}" for (src, reason), n in sorted(per.items())]
            else:
                out += [f"- `{d.file}{':' + str(d.line) if d.line else ''}`: {d.reason}" for d in items]
            out.append("")
        if self.verify:
            out += ["## Verification of the output", "",
                    "passed" if self.verify.get("ok") else f"FAILED: {len(self.verify.get('problems', []))} problems",
                    ""]
        return "\n".join(out)

    def write(self, folder: Path) -> None:
        """Write report.json, report.md and box_sizes.png into `folder`."""
        with open(folder / REPORT_JSON, "w", encoding="utf-8") as f:  # streamed: no copy as one string or dicts
            json.dump(self._as_dict(_Streamed), f, indent=1)
            f.write("\n")
        (folder / REPORT_MD).write_text(self.markdown(), encoding="utf-8")
        plot_box_sizes(self.box_sizes(), folder / BOX_PLOT)


def _fmt_counter(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown pipe table with aligned columns (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plot_box_sizes(sizes: dict[str, Any], path: Path) -> None:
    """Step histograms of box width and height per class (Agg canvas: no display, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    edges = np.asarray(sizes["edges"])
    for ax, key in zip(fig.subplots(1, 2), ("width", "height")):
        for name, counts in sizes[key].items():
            ax.stairs(counts, edges, label=name)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"box {key} / image {key}")
        ax.set_ylabel("boxes")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
