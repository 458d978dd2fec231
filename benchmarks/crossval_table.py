"""Several `mhyolo crossval` runs side by side: held-out mAP per source and the mean, one row per run;
with `--bins`, a second table of the mean held-out mAP50 per ball size (ground-truth boxes of all folds).

    .venv/bin/python benchmarks/crossval_table.py runs/cv/demo-s0 runs/cv/demo-s1 runs/cv/scale-s0 [--imgsz 320]
    .venv/bin/python benchmarks/crossval_table.py runs/cv/demo-s0 runs/cv/demo-s1 --bins
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhyolo.eval.size_bins import SIZE_BINS, bin_cells
from mhyolo.pipeline.crossval_report import mean_bins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="crossval output folders (holding crossval.json)")
    parser.add_argument("--imgsz", type=int, help="score size to show (default: each run's training size)")
    parser.add_argument("--bins", action="store_true",
                        help="also show the mean held-out mAP50 per ball size (runs scored before it show dashes)")
    args = parser.parse_args()
    summaries = {run: json.loads((run / "crossval.json").read_text()) for run in args.runs}
    sources = list(next(iter(summaries.values()))["folds"])
    print("| run | " + " | ".join(f"{s} mAP50" for s in sources) + " | mean mAP50 | mean mAP50-95 | mean type acc |")
    print("|---|" + "---|" * (len(sources) + 3))
    by_size: dict[Path, dict] = {}
    for run, summary in summaries.items():
        size = str(args.imgsz or summary["imgsz"])
        rows = [summary["folds"][s]["scores"].get(size, {}) for s in sources]
        by_size[run] = mean_bins(rows)

        def mean(key: str) -> str:
            values = [r[key] for r in rows if r.get(key) is not None]
            return f"{sum(values) / len(values):.3f}" if values else "–"

        cells = [f"{r['map50']:.3f}" if "map50" in r else "–" for r in rows]
        print(f"| {run.name} | " + " | ".join(cells) + f" | {mean('map50')} | {mean('map50_95')} | "
              f"{mean('cls_accuracy')} |")
    if args.bins:
        print("\nMean held-out mAP50 per ball size (sqrt of the box area in original-image pixels; mean over the "
              "folds with balls of that size, their ground-truth boxes in brackets):\n")
        print("| run | " + " | ".join(b.title for b in SIZE_BINS) + " |")
        print("|---|" + "---|" * len(SIZE_BINS))
        for run, bins in by_size.items():
            print(f"| {run.name} | " + " | ".join(bin_cells(bins)) + " |")


if __name__ == "__main__":
    main()
