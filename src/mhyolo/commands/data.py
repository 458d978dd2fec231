"""`mhyolo data build RECIPE --out DIR`, `mhyolo data verify DATA.yaml` and `mhyolo data fetch`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhyolo.data.dedup import DEFAULT_METHOD


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build a dataset from a recipe, verify one, or fetch the sources",
                                   description="Build a YOLO dataset from a recipe, verify an existing one, or fetch "
                                               "the ball datasets and COCO weights that ../shared holds.")
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

    fetch = actions.add_parser(
        "fetch", help="download the ball datasets and COCO weights (what ../shared holds), SHA-256 checked",
        description="Download what ../shared holds (the COCO yolov5n.pt, the sample photos, the five ball datasets at "
                    "their pinned commits) into the shared folder mhyolo reads, each file checked against the SHA-256 "
                    "recorded in the package's manifest. Interrupted downloads resume; items already in place "
                    "and verified are skipped.")
    fetch.add_argument("--only", nargs="+", metavar="NAME", default=None,
                       help="fetch only these items (see --list)")
    fetch.add_argument("--dest", type=Path, default=None,
                       help="shared folder to fill (default: $MHYOLO_SHARED, else ../shared beside the checkout if it "
                            "exists, else $MHYOLO_HOME/shared, where mhyolo then looks)")
    fetch.add_argument("--list", action="store_true", help="list the items, their sources and licences, and exit")
    fetch.add_argument("--check", action="store_true",
                       help="only check what is in place against the manifest (no network); exit 1 if anything "
                            "is missing or differs")
    fetch.add_argument("--if-missing", action="store_true",
                       help="leave alone (without hashing) every item already found in place: what `make demo` runs")
    fetch.add_argument("--force", action="store_true",
                       help="replace files or folders in the way that do not match the manifest")
    fetch.add_argument("--keep-archives", action="store_true",
                       help="keep the downloaded repository archives (DEST/.downloads) after extraction")
    fetch.add_argument("--manifest", type=Path, default=None,
                       help="another manifest in the same form (a mirror); default: the one in the package")
    fetch.add_argument("--no-progress", action="store_true", help="hide progress bars")
    fetch.set_defaults(func=run_fetch)


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


def run_fetch(args: argparse.Namespace) -> int:
    from mhyolo.data.fetch import fetch, load_manifest, select_items
    from mhyolo.paths import fetch_destination

    if args.list:
        for item in select_items(load_manifest(args.manifest), args.only):
            print(f"{item.name}: {item.dest}/ from {item.describe()}")
            if item.licence:
                print(f"    licence: {item.licence}")
        return 0
    dest = args.dest.expanduser() if args.dest is not None else fetch_destination()
    outcomes = fetch(dest, only=args.only, manifest=args.manifest, progress=not args.no_progress,
                     force=args.force, keep_archives=args.keep_archives, if_missing=args.if_missing,
                     check_only=args.check)
    if args.check:
        bad = [o for o in outcomes if o.status in ("missing", "differs")]
        print("all in place and verified" if not bad else f"{len(bad)} item(s) missing or different in {dest}")
        return 1 if bad else 0
    if args.if_missing and all(o.status == "found" for o in outcomes):
        print(f"everything found in {dest}; nothing fetched")
    return 0
