"""The multi-scale options shared by `predict`, `val` and `benchmark` (`--scales`, `--flip`, `--merge`, ...).

Parsing only: the values become `infer.multiscale.ScaleSettings`, which checks them (a bad
scale or rule is a `ConfigError` naming it) before any model is loaded; the sizes are resolved
against the model's input size and stride when the predictor is built.
"""

from __future__ import annotations

import argparse

from mhyolo.errors import ConfigError

# flags that only mean something with --scales (argparse dest -> flag)
DEPENDENT_FLAGS = {"flip": "--flip", "merge": "--merge", "merge_iou": "--merge-iou", "wbf_conf": "--wbf-conf",
                   "wbf_skip": "--wbf-skip", "size_band": "--size-band", "size_then": "--size-then",
                   "scale_weights": "--scale-weights"}


def add_multiscale_arguments(parser: argparse.ArgumentParser, several_merges: bool = False) -> None:
    """The multi-scale group; with `several_merges` (the benchmark) `--merge` takes several rules."""
    group = parser.add_argument_group(
        "multi-scale inference",
        "run the model at several input sizes (and mirrored) and merge the boxes; without --scales nothing changes")
    group.add_argument("--scales", nargs="+", metavar="S",
                       help="input sizes: a value below 32 is a factor of the model's input size (0.5 1 2 at 320 -> "
                            "160 320 640, rounded to the stride), from 32 up a pixel size (a multiple of the stride). "
                            "A fixed-size exported graph runs larger scales as tiles of its size and refuses smaller "
                            "ones")
    group.add_argument("--flip", action="store_true", default=None,
                       help="also run each scale on the horizontally mirrored image (boxes mirrored back)")
    if several_merges:
        group.add_argument("--merge", nargs="+", metavar="RULE",
                           help="merge rules to time, a column each: wbf, nms, size (default: all)")
    else:
        group.add_argument("--merge", metavar="RULE",
                           help="how the passes are merged: wbf (weighted box fusion, the default), nms, or size "
                                "(each scale keeps the boxes in its size band, then wbf or nms)")
    group.add_argument("--merge-iou", type=float, metavar="F",
                       help="IoU at which boxes of two passes are one object (default: nms the --iou threshold, "
                            "wbf 0.55)")
    group.add_argument("--wbf-conf", metavar="KIND",
                       help="score of a fused box: avg (the members' mean, lowered by the passes that missed it; "
                            "default), max, box_and_model_avg or absent_model_aware_avg")
    group.add_argument("--wbf-skip", type=float, metavar="F",
                       help="weighted box fusion ignores boxes scored below F (default: 0, every box a pass kept)")
    group.add_argument("--size-band", type=float, nargs=2, metavar=("MIN", "MAX"),
                       help="size rule: box side in a scale's input pixels it keeps: from MIN (every scale but the "
                            "largest) to MAX (every scale but the smallest) (default: 8 160)")
    group.add_argument("--size-then", metavar="RULE",
                       help="size rule: what merges the boxes left: wbf (default) or nms")
    group.add_argument("--scale-weights", type=float, nargs="+", metavar="W",
                       help="a score factor in (0, 1] per scale, smallest scale first (default: 1 each)")


def multiscale_settings(args: argparse.Namespace, every_rule_by_default: bool = False) -> list:
    """One `ScaleSettings` per merge rule asked for (one, outside the benchmark, whose default is
    every registered rule); an empty list without --scales. Checked before any model loads."""
    from mhyolo.infer.multiscale import DEFAULT_MERGE, ScaleSettings
    from mhyolo.infer.scale_merge import MERGE_RULES, MergeOptions

    if args.scales is None:
        given = [flag for dest, flag in DEPENDENT_FLAGS.items() if getattr(args, dest, None) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --scales")
        return []
    if getattr(args, "slice", None) is not None:
        raise ConfigError("--scales and --slice do not combine: choose one")
    option_values = {"iou": args.merge_iou, "wbf_conf": args.wbf_conf, "skip": args.wbf_skip,
                     "band": tuple(args.size_band) if args.size_band is not None else None, "then": args.size_then}
    options = MergeOptions(**{key: value for key, value in option_values.items() if value is not None})
    if args.merge is None:
        merges = list(MERGE_RULES) if every_rule_by_default else [DEFAULT_MERGE]
    else:
        merges = list(dict.fromkeys(args.merge if isinstance(args.merge, list) else [args.merge]))
    return [ScaleSettings(sizes=tuple(args.scales), flip=bool(args.flip), merge=merge, options=options,
                               weights=tuple(args.scale_weights) if args.scale_weights is not None else None)
            for merge in merges]
