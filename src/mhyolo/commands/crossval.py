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
    parser.add_argument("--adapt", action="store_true",
                        help="then, per fold, split the held-out images by near-duplicate group, adapt the fold's "
                             "model to one half without its labels (mhyolo adapt) and score the other half before "
                             "and after: FOLD/adapt/, DIR/adapt.md, adapt.json")
    parser.add_argument("--adapt-rounds", type=int, default=1, metavar="N", help="adaptation rounds (default 1)")
    parser.add_argument("--adapt-epochs", type=int, default=10, metavar="N",
                        help="student epochs per round (default 10)")
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
    if args.adapt:
        from mhyolo.adapt.crossval import FoldAdaptSettings, adapt_folds
        from mhyolo.pipeline.crossval import plan

        _, _, folds = plan(CrossvalSettings(config=args.config, out=args.out, imgsz=args.imgsz, seed=args.seed,
                                            sources=args.sources))
        settings = FoldAdaptSettings(rounds=args.adapt_rounds, epochs=args.adapt_epochs,
                                     seed=args.seed if args.seed is not None else 0, progress=not args.quiet)
        adapt_folds([fold.folder for fold in folds], settings, args.out)
        print(f"adaptation: {args.out / 'adapt.md'}, {args.out / 'adapt.json'}")
    return 0
