"""The model call alone, of several models' benchmark folders, in ONNX Runtime and OpenVINO,
interleaved in one run: e.g. the SiLU and ReLU models, FP32 and INT8, so a ratio between any two
rows (the ReLU model's INT8 against the SiLU model's FP32) is measured under the same load.

    .venv/bin/python benchmarks/model_calls.py --model silu=runs/int8/silu-640 \\
        --model relu=runs/int8/relu-640 [--runs 80] [--threads 2]

Each folder is a `mhyolo benchmark --out` folder holding `<stem>.onnx`, `<stem>_int8.onnx`,
`<stem>_openvino/<stem>.xml` and `<stem>_openvino_int8/<stem>.xml` (the files the benchmark made).
The backends run as `mhyolo predict` runs them (OpenVINO INT8: the plugin's default precision for
its float layers); only `backend.run` (the graph) is timed, not decoding or NMS.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from mhyolo.bench.timing import interleaved_times
from mhyolo.machine import cpu_info

FILES = {"ORT FP32": "{stem}.onnx", "ORT INT8": "{stem}_int8.onnx",
         "OpenVINO FP32": "{stem}_openvino/{stem}.xml", "OpenVINO INT8": "{stem}_openvino_int8/{stem}.xml"}


def backends(folder: Path, threads: int) -> dict[str, object]:
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    stem = next(p.stem for p in sorted(folder.glob("*.onnx")) if not p.stem.endswith("_int8"))
    found = {}
    for label, pattern in FILES.items():
        path = folder / pattern.format(stem=stem)
        if path.is_file():
            found[label] = (OpenVinoBackend(path, precision="auto", threads=threads) if path.suffix == ".xml"
                            else OnnxRuntimeBackend(path, threads=threads))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    calls, imgsz = {}, None
    for spec in args.model:
        name, _, folder = spec.partition("=")
        for label, backend in backends(Path(folder), args.threads).items():
            imgsz = imgsz or backend.imgsz
            if backend.imgsz != imgsz:
                raise SystemExit(f"{folder}: exported at {backend.imgsz}, the others at {imgsz}")
            x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
            calls[f"{name} {label}"] = lambda b=backend, x=x: b.run(x)
    times, errors = interleaved_times(calls, args.runs, progress=True)
    print(f"CPU: {cpu_info(args.threads).describe()}; {imgsz} px, {args.runs} interleaved rounds, batch 1\n")
    base_name = next(iter(times))
    base = statistics.median(times[base_name])
    print(f"| model, runtime | model call ms (median) | p90 | speed-up over {base_name} |")
    print("|---|---|---|---|")
    for name, values in times.items():
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"| {name} | {statistics.median(values):.2f} | {p90:.2f} | x{base / statistics.median(values):.2f} |")
    for name, error in errors.items():
        print(f"| {name} | failed: {error} | | |")


if __name__ == "__main__":
    main()
