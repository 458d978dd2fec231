"""Seed 002's table on our ball crops: the four combinations of pooling (max / avg) and optimizer
(Adam 1e-3 / SGD 0.01 momentum 0.8), from `mhyolo classify train` run folders, as a Markdown
table (val and test accuracy of the last epoch, as the seed reported, and of the best-on-val
weights) and one figure with every run's loss and accuracy curves.

    .venv/bin/python benchmarks/seed002_table.py NAME=RUN [NAME=RUN ...] --plot curves.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _rows(run: Path) -> list[dict[str, float]]:
    with (run / "results.csv").open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    runs = {item.split("=", 1)[0]: Path(item.split("=", 1)[1]) for item in args.runs}
    print("| configuration | pool | optimizer | epochs | last: val acc | last: test acc | best: val acc | "
          "best: test acc | s / epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        settings = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() \
            else json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        rows = _rows(run)
        optimizer = f"{settings['optim']} {settings.get('lr') or ''}".strip()
        seconds = sum(r["seconds"] for r in rows) / len(rows)
        cells = [name, settings["pool"], optimizer, str(len(rows))]
        for which in ("last", "best"):
            cells += [f"{metrics[which]['val']['accuracy']:.3f}",
                      f"{metrics[which]['test']['accuracy']:.3f}" if "test" in metrics[which] else "–"]
        cells.append(f"{seconds:.0f}")
        print("| " + " | ".join(cells) + " |")
    if args.plot:
        fig = Figure(figsize=(14, 4.2), dpi=100)
        axes = fig.subplots(1, 2)
        for name, run in runs.items():
            rows = _rows(run)
            epochs = [r["epoch"] for r in rows]
            for ax, what in zip(axes, ("loss", "accuracy")):
                line = ax.plot(epochs, [r[f"val/{what}"] for r in rows], marker="o", label=f"{name} val")[0]
                ax.plot(epochs, [r[f"train/{what}"] for r in rows], linestyle="--", color=line.get_color(),
                        label=f"{name} train")
        for ax, what in zip(axes, ("loss", "accuracy")):
            ax.set_title(what)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].set_yscale("log")
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        FigureCanvasAgg(fig)
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()
