"""What the default inference rule costs: each image at the training size and at its own size, merged by
ball size (`infer.default_rule`), against one pass at the training size and one at the image's own size.

    python benchmarks/default_rule_latency.py runs/demo/model.safetensors runs/demo/data/images/val

Images are grouped by their long side (up to 3 per group); each rule predicts every image of a group,
rules alternating in 5 rounds; the table gives the median ms per image end to end (letterbox, model,
NMS, types, merge) and the default's ratio to each single pass. Name the CPU beside the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import torch

from mhyolo.infer.assemble import InferenceSettings
from mhyolo.runtime.model import InferenceModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="a model that takes any input size (.safetensors or .pt)")
    parser.add_argument("images", type=Path, help="a folder of .jpg photos of several sizes")
    parser.add_argument("--per-size", type=int, default=3, help="images per long side (default 3)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = InferenceModel.load(args.weights)
    groups: dict[int, list] = {}
    for path in sorted(args.images.glob("*.jpg")):
        image = cv2.imread(str(path))
        groups.setdefault(max(image.shape[:2]), []).append(image)
    settings = InferenceSettings(rect=True)
    size = model.imgsz
    predictors = {str(size): model.predictor(settings, size), "native": model.predictor(settings, "native"),
                  "default": model.predictor(settings, None)}
    print(f"| image long side | images | {size} ms | native ms | default ms | default / {size} | default / native |")
    print("|---|---|---|---|---|---|---|")
    for side, images in sorted(groups.items()):
        images = images[:args.per_size]
        times: dict[str, list[float]] = {name: [] for name in predictors}
        for predictor in predictors.values():
            predictor.predict(images[:1])  # warm-up
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                for image in images:
                    start = time.perf_counter()
                    predictor.predict([image])
                    times[name].append((time.perf_counter() - start) * 1000)
        ms = {name: statistics.median(values) for name, values in times.items()}
        print(f"| {side} | {len(images)} | {ms[str(size)]:.1f} | {ms['native']:.1f} | {ms['default']:.1f} | "
              f"x{ms['default'] / ms[str(size)]:.2f} | x{ms['default'] / ms['native']:.2f} |")


if __name__ == "__main__":
    main()
