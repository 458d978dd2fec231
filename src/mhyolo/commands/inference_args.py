"""Argument helpers shared by the commands that run a model (`predict`, `val`): the slicing flags.

Parsing only, like `commands.scale_args` (the multi-scale flags): the values become the settings
`runtime.model.InferenceModel` runs with, checked before any model is loaded. No command imports
another command; what two of them share lives in a module like this one.
"""

from __future__ import annotations

import argparse

from mhyolo.errors import ConfigError


def add_slice_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slice", type=int, metavar="SIZE",
                        help="also run the model on overlapping SIZE x SIZE tiles of each image (original pixels) "
                             "and merge them with the whole-image detections: finds small objects")
    parser.add_argument("--slice-overlap", type=float, default=None, metavar="F",
                        help="share of a tile overlapping its neighbour, in [0, 0.9) (default: 0.2)")


def slice_settings(args: argparse.Namespace):
    """`--slice` / `--slice-overlap` as SliceSettings (None without --slice); checked before any model loads."""
    from mhyolo.infer.slicing import DEFAULT_OVERLAP, SliceSettings

    if args.slice is None:
        if args.slice_overlap is not None:
            raise ConfigError("--slice-overlap needs --slice SIZE")
        return None
    return SliceSettings(size=args.slice, overlap=DEFAULT_OVERLAP if args.slice_overlap is None else args.slice_overlap)
