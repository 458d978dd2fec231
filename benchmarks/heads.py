"""What the ball-type heads cost at run time: the one-class detector alone against the same
detector with the image head, with the per-object head, a YOLOv5n with the types as its
3 detection classes, the decoupled-head detector (the distillation teacher, alone and with
the lite per-object head) and the detector with a fourth level at stride 4 (P2, alone and with the
lite per-object head). PyTorch FP32 (BatchNorm fused), batch 1, median and p90 ms.

    .venv/bin/python benchmarks/heads.py [--imgsz 640] [--runs 30] [--threads N]

The models run interleaved, one call each per round, so machine load hits them alike and
the ratios to the detector and to the shipped multi-head model (yolov5n-typehead-lite, the last
two columns) are meaningful even on a busy machine. Latency
does not depend on the weights, so freshly built models are used.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mhyolo.machine import cpu_info
from mhyolo.model.yolo import YoloModel

TYPES = ["basketball", "football", "tennis-ball"]
DETECTOR = "detector (nc=1)"
MULTIHEAD = "+ per-object head (lite, 1x1)"  # the shipped multi-head model


def models() -> dict[str, YoloModel]:
    return {
        DETECTOR: YoloModel("yolov5n", nc=1, names=["ball"]),
        "+ image head": YoloModel("yolov5n-imagehead", names=["ball"]),
        "+ per-object head (3x3, default)": YoloModel("yolov5n-typehead", names=["ball"]),
        MULTIHEAD: YoloModel("yolov5n-typehead-lite", names=["ball"]),
        "nc=3 detector": YoloModel("yolov5n", nc=3, names=TYPES),
        "decoupled detector (nc=1)": YoloModel("yolov5n-decoupled", names=["ball"]),
        "decoupled + per-object head (lite, 1x1)": YoloModel("yolov5n-decoupled-typehead-lite", names=["ball"]),
        "P2 detector (nc=1, strides 4-32)": YoloModel("yolov5n-p2", names=["ball"]),
        "P2 + per-object head (lite, 1x1)": YoloModel("yolov5n-p2-typehead-lite", names=["ball"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    built = {name: model.eval().fuse() for name, model in models().items()}
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    times: dict[str, list[float]] = {name: [] for name in built}
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            for name, model in built.items():
                start = time.perf_counter()
                model.predict(x)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times[DETECTOR])
    multihead = statistics.median(times[MULTIHEAD])
    print(f"imgsz {args.imgsz}, batch 1, {args.runs} interleaved rounds; {cpu_info(args.threads).describe()}\n")
    print("| model | parameters | median ms | p90 ms | x detector | x typehead-lite |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        values.sort()
        params = sum(p.numel() for p in built[name].parameters())
        median = statistics.median(values)
        print(f"| {name} | {params / 1e6:.3f} M | {median:.1f} | {values[int(0.9 * (len(values) - 1))]:.1f} "
              f"| {median / base:.3f} | {median / multihead:.3f} |")


if __name__ == "__main__":
    main()
