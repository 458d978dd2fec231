"""`mhyolo crossval CONFIG --out DIR`: leave-one-source-out cross-validation of a training recipe."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crossval", help="train without each source in turn and score the source it never saw",
        description="Leave-one-source-out cross-validation: for each source of the recipe, build the dataset "
                    "without it (its near-duplicates removed from training too), train, and score every image of "
                    "the held-out source. Writes DIR/crossval.json, crossval.md, crossval.png and report.html; "
                    "resumable per fold.")
    parser.add_argument("config", type=Path,
                        help="a pipeline file (its final stage's training recipe is used) or a data recipe "
                             "(the multi-head model of the shipped multihead settings)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per fold)")
    parser.add_argument("--imgsz", type=int, help="training size (default: the pipeline file's)")
    parser.add_argument("--epochs", type=int, help="epochs per fold (default: the pipeline stage's)")
    parser.add_argument("--seed", type=int, help="seed for data and training (default: the pipeline file's)")
    parser.add_argument("--sources", nargs="+", metavar="NAME", help="hold out only these sources")
    parser.add_argument("--eval-imgsz", type=int, nargs="+", default=[], metavar="SIZE",
                        help="also score the held-out images at these sizes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.pipeline.crossval import CrossvalSettings, run_crossval
    from mhyolo.report import write_html_report

    result = run_crossval(CrossvalSettings(config=args.config, out=args.out, imgsz=args.imgsz, epochs=args.epochs,
                                           seed=args.seed, sources=args.sources, eval_imgsz=args.eval_imgsz,
                                           progress=not args.quiet), html_report=write_html_report)
    paths = result["paths"]
    print(f"report: {paths['html']}, {paths['markdown']}, {paths['json']}, {paths['plot']}")
    return 0
