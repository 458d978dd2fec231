"""The untouched COCO YOLOv5n as a ball detector: the reference every fine-tuned model must beat
on sources it never saw. Its "sports ball" class (32) is folded into a one-class detector
exactly as training starts from it with `class_init: 32` (objectness logit + class-32 logit),
then scored like any model, class-agnostically, on the given splits.

    .venv/bin/python benchmarks/coco_ball.py runs/cv/demo-s0/*/data/data.yaml --split test --imgsz 320 640
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mhyolo.data.spec import load_data_spec
from mhyolo.eval.validate import score_split
from mhyolo.train.state import build_training_model

SPORTS_BALL = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", type=Path, help="data.yaml files (e.g. the crossval folds)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--weights", default="yolov5n.pt")
    args = parser.parse_args()
    model, _ = build_training_model(args.weights, None, ["ball"], seed_class=SPORTS_BALL)
    model.eval()
    print("| data | split | imgsz | images | mAP50 | mAP50-95 | P | R | FP / negative image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data in args.data:
        spec = load_data_spec(data)
        for size in args.imgsz:
            result = score_split(model, spec, size, args.split, progress=False)
            m, negatives = result.metrics, result.negatives
            fp = "–" if negatives.per_image is None else f"{negatives.per_image:.3f}"
            print(f"| {data} | {args.split} | {size} | {m.images} | {m.map50:.3f} | {m.map50_95:.3f} | "
                  f"{m.precision:.3f} | {m.recall:.3f} | {fp} |", flush=True)


if __name__ == "__main__":
    main()
