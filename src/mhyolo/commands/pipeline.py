"""`mhyolo pipeline --config FILE --out RUN`: every stage in a row, resumable stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="data build -> detector -> type head (frozen, then joint) -> report, in one run folder")
    parser.add_argument("--config", required=True, type=Path,
                        help="a pipeline file (configs/pipeline/*.yaml) or a data recipe (default stages)")
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="run folder (default runs/pipeline)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.pipeline.config import load_pipeline_config
    from mhyolo.pipeline.run import run_pipeline

    result = run_pipeline(load_pipeline_config(args.config), args.out, progress=not args.quiet)
    print(f"model: {result['model']}\nreport: {result['html']}, {result['report']} and {result['markdown']}")
    return 0
