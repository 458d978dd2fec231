"""`mhyolo report RUN [--out FILE]`: the run's tables and plots as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="one self-contained HTML page of a run's tables and plots (RUN/report.html)",
        description="Render a run folder (pipeline, cross-validation, benchmark, dataset build or training run) "
                    "as one HTML page: the tables from its JSON files and its plots inlined, no network and no "
                    "JavaScript needed; opens on a laptop or a phone. The pipeline and crossval write it "
                    "themselves at the end.")
    parser.add_argument("run", type=Path, help="the run folder")
    parser.add_argument("--out", type=Path, help="the page to write (default: RUN/report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.report import write_html_report

    path = write_html_report(args.run, args.out)
    size = path.stat().st_size
    print(f"report: {path} ({size / 1e6:.1f} MB)" if size >= 1e6 else f"report: {path} ({size / 1e3:.0f} kB)")
    return 0
