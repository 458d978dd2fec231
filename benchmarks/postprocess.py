"""Post-processing per image (decoding, NMS, types), the full decode against the per-level read.

    .venv/bin/python benchmarks/postprocess.py --weights best.safetensors [--image photo.jpg]
        [--sizes 320 640] [--conf 0.25 0.001] [--runs 200] [--threads N]

For each size the model is exported to ONNX once and run once on the letterboxed image; the
same graph outputs (and, for PyTorch, the same forward outputs) are then post-processed again
and again: "full" decodes every row and takes every row's type softmax before NMS (`reconstruct`,
then `non_max_suppression`), "per level" thresholds objectness first and decodes only those rows
(`mhyolo.infer.levels`). Both keep the very same boxes (checked here). The model call is timed
in the same rounds for scale. Rounds are interleaved, so ratios hold on a busy machine; absolute
numbers do not.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from mhyolo.bench.timing import interleaved_times, percentile
from mhyolo.infer.layout import reconstruct
from mhyolo.deploy.onnx_export import export_onnx
from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend
from mhyolo.infer.inference import Inference
from mhyolo.infer.preprocess import letterbox, to_float_batch
from mhyolo.machine import cpu_info
from mhyolo.model.weights import load_model
from mhyolo.paths import shared_dir


def _same(a, b) -> bool:
    """The same kept rows, boxes and scores, and the same types (probabilities to PyTorch's softmax rounding)."""
    return all(np.array_equal(x.det.indices, y.det.indices) and np.array_equal(x.det.boxes, y.det.boxes)
               and np.array_equal(x.det.scores, y.det.scores)
               and (x.types is None) == (y.types is None)
               and (x.types is None or (np.array_equal(x.types.ids, y.types.ids)
                                        and np.allclose(x.types.scores, y.types.scores, rtol=0, atol=3e-7)))
               for x, y in zip(a, b))


def _calls(model, backend, x: np.ndarray, conf: float) -> tuple[dict, int]:
    """Timed calls for one size and threshold, and the number of boxes kept."""
    graph = Inference(backend, conf=conf)
    full_graph = Inference(backend, conf=conf)
    full_graph.reader = None  # reads `predict`'s decoded rows
    torch_levels = Inference(model, conf=conf)
    torch_full = Inference(model, conf=conf)
    torch_full.reader = None
    raw = backend.run(x)
    forward = model.forward(torch.from_numpy(x))
    kept = graph.finish(raw)
    checks = [(kept, full_graph.finish(reconstruct(raw, backend.metadata))),
              (torch_levels.finish(forward), torch_full.finish(model.predict(torch.from_numpy(x))))]
    if not all(_same(a, b) for a, b in checks):
        raise SystemExit("the per-level read kept other boxes than the full decode")
    calls = {"ONNX Runtime: model call": lambda: backend.run(x),
             "ONNX Runtime: post, full decode": lambda: full_graph.finish(reconstruct(raw, backend.metadata)),
             "ONNX Runtime: post, per level": lambda: graph.finish(raw),
             "PyTorch: forward": lambda: model.forward(torch.from_numpy(x)),
             "PyTorch: post, full decode": lambda: torch_full.finish(
                 {name: model.heads[name].inference(value) for name, value in forward.items()}),
             "PyTorch: post, per level": lambda: torch_levels.finish(forward)}
    return calls, len(kept[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a .safetensors or .pt model")
    parser.add_argument("--image", type=Path, default=shared_dir() / "images" / "bus.jpg")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--conf", type=float, nargs="+", default=[0.25, 0.001])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = cv2.imread(str(args.image))
    if image is None:
        raise SystemExit(f"{args.image}: cannot read the image")
    model = load_model(args.weights).fuse().eval()
    print(f"weights {args.weights}, image {args.image.name}, {args.runs} interleaved rounds after {args.warmup}; "
          f"{cpu_info(args.threads).describe()}\n")
    print("| imgsz | conf | boxes kept | step | median ms | p90 ms |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for size in args.sizes:
            onnx_path = export_onnx(model, Path(tmp) / f"model{size}.onnx", imgsz=size).path
            backend = OnnxRuntimeBackend(onnx_path, threads=args.threads)
            x = to_float_batch([letterbox(image, size)[0]])
            for conf in args.conf:
                calls, kept = _calls(model, backend, x, conf)
                times, _ = interleaved_times(calls, args.runs, args.warmup, keep_going=False)
                for name, values in times.items():
                    ordered = sorted(values)
                    print(f"| {size} | {conf:g} | {kept} | {name} | {statistics.median(ordered):.2f} "
                          f"| {percentile(ordered, 90):.2f} |")


if __name__ == "__main__":
    main()
