"""PyTorch FP32 latency of a model at several input sizes, batch 1: median and p90 in ms.

    .venv/bin/python benchmarks/latency.py [--weights yolov5n.pt] [--sizes 640 320] [--runs 50] [--threads N]

Warm-up runs are excluded. Sizes are measured in the same process one after the
other, so their ratio is meaningful even on a busy machine; absolute numbers are not.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mhyolo.machine import cpu_info
from mhyolo.model.weights import load_model


def measure(model: torch.nn.Module, size: int, runs: int, warmup: int) -> list[float]:
    x = torch.rand(1, 3, size, size)
    timings = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model.predict(x)
            if i >= warmup:
                timings.append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolov5n.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 320])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"fp32": load_model(args.weights), "fp32 fused": load_model(args.weights).fuse()}
    print(f"weights {args.weights}, batch 1, {args.runs} runs after {args.warmup} warm-up; "
          f"{cpu_info(args.threads).describe()}\n")
    print("| model | imgsz | median ms | p90 ms | images/s |")
    print("|---|---|---|---|---|")
    for name, model in variants.items():
        for size in args.sizes:
            t = sorted(measure(model, size, args.runs, args.warmup))
            median, p90 = statistics.median(t), t[int(0.9 * (len(t) - 1))]
            print(f"| {name} | {size} | {median:.1f} | {p90:.1f} | {1000 / median:.1f} |")


if __name__ == "__main__":
    main()
