"""What sliced inference buys and costs: mAP of whole-image against sliced inference on a
dataset split, and the latency per image of each (end to end: tiles, model calls, merge),
interleaved in one run so the ratio holds on a busy machine.

    .venv/bin/python benchmarks/slicing.py --weights runs/cv/demo-s0/football/train/weights/best.safetensors \\
        --data runs/cv/demo-s0/football/data/data.yaml --split test --slice 256 --overlap 0.2

Any weights `mhyolo val` takes (an exported .onnx or .xml too). The CPU is named with the figures.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import torch

from mhyolo.bench.timing import interleaved_times
from mhyolo.data.pairing import split_images
from mhyolo.data.spec import load_data_spec
from mhyolo.eval.validate import score_split
from mhyolo.runtime.load import input_size, load_backend
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.slicing import SlicedPredictor, SliceSettings
from mhyolo.machine import cpu_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--imgsz", type=int, default=None, help="default: the size the model was trained at")
    parser.add_argument("--slice", type=int, nargs="+", required=True, metavar="SIZE", help="tile sizes to compare")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=5, help="timed rounds over the timing images")
    parser.add_argument("--timing-images", type=int, default=10)
    parser.add_argument("--no-score", action="store_true", help="time only (no mAP columns)")
    args = parser.parse_args()

    backend = load_backend(args.weights)
    imgsz = input_size(backend, args.imgsz)
    spec = load_data_spec(args.data)

    def scored(settings: SliceSettings | None):
        return None if args.no_score else score_split(backend, spec, imgsz, args.split, progress=True,
                                                      slicing=settings)

    rows = {"whole image": (scored(None), None)}
    for size in args.slice:
        settings = SliceSettings(size=size, overlap=args.overlap)
        rows[f"sliced {size} px, overlap {args.overlap}"] = (scored(settings), settings)

    images = [cv2.imread(str(p)) for p in split_images(spec, args.split)[:args.timing_images]]
    predictor = Predictor(backend, imgsz=imgsz, conf=0.25)
    calls = {"whole image": lambda: predictor.predict(images)}
    tiles = {"whole image": 1.0}
    for name, (_, settings) in rows.items():
        if settings is not None:
            sliced = SlicedPredictor(predictor, settings)
            calls[name] = lambda s=sliced: s.predict(images)
            tiles[name] = statistics.mean(sliced.calls_per_image(image) for image in images)
    times, _ = interleaved_times(calls, args.runs, warmup=1, keep_going=False)
    base = statistics.median(times["whole image"]) / len(images)
    scored_images = "not scored" if args.no_score else f"{len(rows['whole image'][0].results)} images"
    print(f"\n{args.weights} on {args.data} ({args.split}, {scored_images}), "
          f"input {imgsz}; {cpu_info(torch.get_num_threads()).describe()}; latency over {len(images)} images, "
          f"{args.runs} interleaved rounds\n")
    print("| inference | mAP50 | mAP50-95 | P | R | model calls / image | ms / image | x whole image |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (result, _) in rows.items():
        ms = statistics.median(times[name]) / len(images)
        scores = ("– | – | – | –" if result is None else
                  " | ".join(f"{v:.3f}" for v in (result.metrics.map50, result.metrics.map50_95,
                                                   result.metrics.precision, result.metrics.recall)))
        print(f"| {name} | {scores} | {tiles[name]:.1f} | {ms:.1f} | x{ms / base:.2f} |")


if __name__ == "__main__":
    main()
