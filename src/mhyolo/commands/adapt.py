"""`mhyolo adapt`: adapt a model to your own footage without labelling it (see `mhyolo.adapt`)."""

from __future__ import annotations

import argparse

from mhyolo.adapt.guard import DEFAULT_MAX_VAL_DROP
from mhyolo.adapt.settings import DEFAULT_DEDUP_BITS, DEFAULT_IGNORE, DEFAULT_KEEP, MIN_KEPT_SHARE, TARGET_PRECISION


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "adapt", help="adapt a model to your own footage: pseudo-labels, review, self-training",
        description="The model labels your images or video (the teacher); confident boxes become pseudo-labels, "
                    "unsure ones ignore regions; the model fine-tuned on them (the student) is RUN/model.safetensors. "
                    "RUN/pseudo is a YOLO dataset to review and correct, then give back with --labelled.")
    parser.add_argument("--weights", required=True, help="the model to adapt: its .pt or .safetensors")
    parser.add_argument("--images", required=True, metavar="DIR|VIDEO", help="a folder of images or a video file")
    parser.add_argument("--labelled", metavar="DATA_YAML",
                        help="labelled data (e.g. a corrected pseudo folder's data.yaml): trains with the pseudo-"
                             "labels; its val split calibrates the keep threshold and scores before/after")
    parser.add_argument("--out", required=True, help="run folder (a re-run with the same settings resumes it)")
    parser.add_argument("--fps", type=float, default=5.0, help="video: frames sampled per second (default 5)")
    parser.add_argument("--keep", type=float,
                        help=f"keep threshold (default: the lowest score with --precision on the labelled val split, "
                             f"else {DEFAULT_KEEP})")
    parser.add_argument("--ignore", type=float, default=DEFAULT_IGNORE,
                        help=f"boxes from this score up to the keep threshold are ignore regions (default {DEFAULT_IGNORE})")
    parser.add_argument("--precision", type=float, default=TARGET_PRECISION,
                        help=f"precision the calibrated keep threshold must reach (default {TARGET_PRECISION})")
    parser.add_argument("--temporal-k", type=float, default=2.0, metavar="K",
                        help="video: keep a box only if a neighbouring frame has a ball within K x its size "
                             "(default 2; 0 switches this off)")
    parser.add_argument("--dedup", type=int, default=DEFAULT_DEDUP_BITS, metavar="BITS",
                        help=f"leave out images within BITS of an earlier target or a labelled image by perceptual "
                             f"hash (default {DEFAULT_DEDUP_BITS}; -1 keeps them)")
    parser.add_argument("--rounds", type=int, default=1, help="self-training rounds; the student becomes the teacher")
    parser.add_argument("--epochs", type=int, default=10, help="student epochs per round (default 10)")
    parser.add_argument("--empty-targets", action="store_true",
                        help="also train the student on target images where the teacher kept no box, as ball-free "
                             "images (default: only those with a kept box; most others hold balls it missed)")
    parser.add_argument("--min-kept", type=float, default=MIN_KEPT_SHARE, metavar="SHARE",
                        help="train a student only if at least this share of the target images has a kept box; "
                             f"below it the model is kept as it was (default {MIN_KEPT_SHARE})")
    parser.add_argument("--max-val-drop", type=float, default=DEFAULT_MAX_VAL_DROP, metavar="MAP",
                        help="keep the adapted model only if its mAP50 on the labelled val split falls by at most "
                             f"this (default {DEFAULT_MAX_VAL_DROP}); -1 keeps it whatever it scores")
    parser.add_argument("--hyp", default="multihead", help="training settings: shipped name or YAML (default multihead)")
    parser.add_argument("--imgsz", type=int, help="input size (default: the size the model was trained at)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--teacher", default="auto",
                        help="how the teacher predicts: auto (slices frames much larger than the input), whole, sliced")
    parser.add_argument("--slice-factor", type=float, default=2.0,
                        help="auto teacher: slice images whose long side is at least this x the input size")
    parser.add_argument("--classes", type=int, nargs="+", metavar="ID",
                        help="keep only these detector classes (e.g. 32, COCO's sports ball)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="data loader processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.adapt.run import run_adapt
    from mhyolo.adapt.settings import AdaptSettings

    settings = AdaptSettings(
        weights=args.weights, images=args.images, out=args.out, labelled=args.labelled, fps=args.fps, keep=args.keep,
        ignore=args.ignore, precision=args.precision, temporal_k=args.temporal_k,
        dedup_bits=None if args.dedup < 0 else args.dedup, rounds=args.rounds, epochs=args.epochs, empty_targets=args.empty_targets, min_kept=args.min_kept,
        max_val_drop=None if args.max_val_drop < 0 else args.max_val_drop,
        hyp=args.hyp,
        imgsz=args.imgsz, batch=args.batch, teacher=args.teacher, slice_factor=args.slice_factor,
        classes=args.classes, device=args.device, workers=args.workers, seed=args.seed, progress=not args.quiet)
    result = run_adapt(settings)
    print(f"adapted model: {result.model}\npseudo-labels: {result.pseudo} (review, then --labelled "
          f"{result.pseudo / 'data.yaml'})\nreport: {result.report}")
    return 0
