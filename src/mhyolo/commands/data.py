"""`mhyolo data build RECIPE --out DIR` and `mhyolo data verify DATA.yaml`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhyolo.data.dedup import DEFAULT_METHOD


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build a dataset from a recipe, or verify one",
                                   description="Build a YOLO dataset from a recipe, or verify an existing one.")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    build = actions.add_parser("build", help="build a dataset from a recipe YAML (see docs/data.md)")
    build.add_argument("recipe", type=Path, help="recipe YAML, e.g. configs/balls.yaml")
    build.add_argument("--out", type=Path, required=True, help="output folder (must be empty or new)")
    build.add_argument("--seed", type=int, default=None, help="replace the recipe's seed")
    build.add_argument("--overwrite", action="store_true",
                       help="replace a previous build in --out (removes only the files a build writes)")
    build.add_argument("--workers", type=int, default=None,
                       help="processes decoding and hashing images (default: the recipe's scan.workers, else every core)")
    build.add_argument("--no-hash-cache", action="store_true",
                       help="decode every image again instead of reusing hashes of unchanged files from earlier builds")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")
    build.set_defaults(func=run_build)

    verify = actions.add_parser("verify", help="check images, labels and train/val leaks of a dataset")
    verify.add_argument("data", type=Path, help="data.yaml (or its folder)")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.add_argument("--threshold", type=int, default=6,
                        help="max Hamming distance of near-duplicates across splits (default 6)")
    verify.add_argument("--no-leak-check", action="store_true", help="skip the near-duplicate check across splits")
    verify.add_argument("--hash", default=DEFAULT_METHOD, choices=("phash", "dhash", "ahash", "whash"),
                        help="perceptual hash for the leak check")
    verify.add_argument("--workers", type=int, default=None,
                        help="processes decoding and hashing images (default: every core)")
    verify.add_argument("--no-progress", action="store_true", help="hide progress bars")
    verify.set_defaults(func=run_verify)


def run_build(args: argparse.Namespace) -> int:
    from mhyolo.data.build import build_dataset
    from mhyolo.data.hashing import resolve_workers
    from mhyolo.data.recipe import load_recipe
    from mhyolo.data.report import REPORT_MD

    recipe = load_recipe(args.recipe, seed=args.seed)
    if args.workers is not None:
        recipe.scan.workers = resolve_workers(args.workers)
    if args.no_hash_cache:
        recipe.scan.cache = False
    report = build_dataset(recipe, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(report.summary_table())
    for line in report.summary_lines():
        print(line)
    for drop in report.drops:  # bad files are few and worth seeing; sampling drops are only counted
        if drop.stage in ("orphan-label", "verify", "same-stem", "mixed"):
            where = f"{drop.file}:{drop.line}" if drop.line else drop.file
            print(f"left out ({drop.stage}): {where}: {drop.reason}")
    print(f"dataset: {Path(report.out) / 'data.yaml'}; report: {Path(report.out) / REPORT_MD}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from mhyolo.data.hashing import resolve_workers
    from mhyolo.data.report import format_table
    from mhyolo.data.verify import verify_dataset

    threshold = None if args.no_leak_check else args.threshold
    report = verify_dataset(args.data, leak_threshold=threshold, hash_method=args.hash,
                            progress=not args.no_progress, workers=resolve_workers(args.workers))
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0 if report.ok else 1
    rows = [[split, s.images, s.negatives, s.boxes, s.bad_images, s.bad_labels, s.orphan_labels, s.same_stem,
             s.missing] for split, s in report.splits.items()]
    print(format_table(["split", "images", "negatives", "boxes", "bad images", "bad labels", "orphan labels",
                        "same stem", "missing"], rows))
    leaks = report.count("leak")
    print(f"near-duplicates across splits: {leaks}" if threshold is not None else "leak check skipped")
    for problem in report.problems:
        print(f"{problem.kind}: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problem(s) in {report.data_yaml}")
    return 0 if report.ok else 1
