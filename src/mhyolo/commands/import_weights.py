"""`mhyolo import-weights IN.pt -o OUT.safetensors`: official checkpoint -> our format."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights", help="convert an official YOLOv5 .pt into a .safetensors checkpoint (no code from the file runs)"
    )
    parser.add_argument("source", help="official YOLOv5 v6.x/v7.0 .pt (path or bare name like yolov5n.pt)")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output .safetensors path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.model.weights import import_weights, read_metadata

    out = import_weights(args.source, args.out)
    meta = read_metadata(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(meta['names'])} classes, strides {meta['strides']}")
    return 0
