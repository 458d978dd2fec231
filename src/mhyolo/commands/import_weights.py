"""`mhyolo import-weights IN.pt -o OUT.safetensors`: official checkpoint -> our format."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights", help="convert a YOLOv5 .pt (release weights or a train.py best.pt/last.pt) into a "
                               ".safetensors checkpoint (no code from the file runs)"
    )
    parser.add_argument("source", help="YOLOv5 v6.x/v7.0 .pt (path or bare name like yolov5n.pt); a train.py "
                                       "checkpoint gives its EMA weights when it has them")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output .safetensors path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.model.weights import import_weights, read_metadata

    out = import_weights(args.source, args.out)
    meta = read_metadata(out)
    used = meta.get("source_info", {}).get("weights_from", "model")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(meta['names'])} classes, strides {meta['strides']}, "
          f"weights from the checkpoint's '{used}' entry")
    return 0
