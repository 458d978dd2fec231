"""The `mhyolo` command: one sub-command per pipeline stage.

Each stage lives in `mhyolo.commands.<name>` and exposes `register(subparsers)`,
which adds its parser and sets `func` to the function that runs it. Modules are
imported only when the command line is parsed, so `mhyolo --help` stays fast and a
stage whose optional dependencies are missing does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mhyolo import __version__
from mhyolo.errors import MhyoloError
from mhyolo.installs import install_hint

# Order is the order shown in --help.
COMMAND_MODULES = (
    "predict",
    "track",
    "import_weights",
    "data",
    "train",
    "val",
    "classify",
    "pipeline",
    "crossval",
    "adapt",
    "export",
    "quantize",
    "benchmark",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhyolo",
        description="Multi-head YOLOv5: detect objects and classify each one, then ship it to edge hardware.",
    )
    parser.add_argument("--version", action="version", version=f"mhyolo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mhyolo.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("mhyolo.commands"):
                continue  # stage not present in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MhyoloError as exc:
        print(f"mhyolo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # the runtime install reaching a training module: name the install
        hint = install_hint(exc.name)
        if hint is None:
            raise
        print(f"mhyolo {args.command}: error: {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
