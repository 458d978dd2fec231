"""The model call alone, of several models' benchmark folders, in ONNX Runtime and OpenVINO,
interleaved in one run: e.g. the SiLU and ReLU models, FP32 and INT8, so a ratio between any two
rows (the ReLU model's INT8 against the SiLU model's FP32) is measured under the same load.

    .venv/bin/python benchmarks/model_calls.py --model silu=runs/int8/silu-640 \\
        --model relu=runs/int8/relu-640 [--runs 80] [--threads 2] [--image photo.jpg]

Each folder is a `mhyolo benchmark --out` folder holding `<stem>.onnx`, `<stem>_int8.onnx`,
`<stem>_openvino/<stem>.xml` and `<stem>_openvino_int8/<stem>.xml` (the files the benchmark made),
and optionally `<stem>_openvino_int8_u8/<stem>.xml` (an INT8 IR taking the uint8 letterbox, e.g.
`mhyolo quantize --backend openvino --input uint8`). The backends run as `mhyolo predict` runs them
(OpenVINO INT8: the plugin's default precision for its float layers). Three times per row:

* "model": `backend.run` (the graph) on an input already in the form it takes;
* "input + model": from the letterboxed uint8 image (the float conversion where the graph wants
  floats) to the graph's outputs;
* "end to end" (with `--image`): `Predictor.predict` on that photo, letterbox to typed boxes.

Each kind is its own interleaved pass over the rows (a graph call right after Python work pays
for waking the runtime's threads, so mixing kinds in one round would tax the first of each).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from mhyolo.bench.timing import interleaved_times
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.preprocess import letterbox
from mhyolo.machine import cpu_info


def read_bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"{path}: not an image OpenCV can read")
    return image

FILES = {"ORT FP32": "{stem}.onnx", "ORT INT8": "{stem}_int8.onnx",
         "OpenVINO FP32": "{stem}_openvino/{stem}.xml", "OpenVINO INT8": "{stem}_openvino_int8/{stem}.xml",
         "OpenVINO INT8 uint8 input": "{stem}_openvino_int8_u8/{stem}.xml"}
KINDS = ("model", "input + model", "end to end")


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
    parser.add_argument("--image", type=Path, help="a photo: also time `Predictor.predict` on it (end to end)")
    args = parser.parse_args()
    photo = read_bgr(args.image) if args.image else None
    calls, rows, imgsz = {}, [], None
    for spec in args.model:
        name, _, folder = spec.partition("=")
        for label, backend in backends(Path(folder), args.threads).items():
            imgsz = imgsz or backend.imgsz
            if backend.imgsz != imgsz:
                raise SystemExit(f"{folder}: exported at {backend.imgsz}, the others at {imgsz}")
            row = f"{name} {label}"
            rows.append(row)
            padded = letterbox(photo, imgsz)[0] if photo is not None else \
                np.random.default_rng(0).integers(0, 256, (imgsz, imgsz, 3), dtype=np.uint8)
            form = backend.input_form
            x = form.from_letterbox([padded])
            calls[(row, KINDS[0])] = lambda b=backend, x=x: b.run(x)
            calls[(row, KINDS[1])] = lambda b=backend, f=form, p=padded: b.run(f.from_letterbox([p]))
            if photo is not None:
                predictor = Predictor(backend, imgsz=imgsz)
                calls[(row, KINDS[2])] = lambda p=predictor: p.predict([photo])
    kinds = [kind for kind in KINDS if any(key[1] == kind for key in calls)]
    medians, errors = {}, {}
    for kind in kinds:
        times, failed = interleaved_times({key: call for key, call in calls.items() if key[1] == kind}, args.runs,
                                          progress=True)
        medians.update({key: statistics.median(values) for key, values in times.items()})
        errors.update(failed)
    print(f"CPU: {cpu_info(args.threads).describe()}; {imgsz} px, {args.runs} interleaved rounds, batch 1\n")
    print("| model, runtime | " + " | ".join(f"{kind} ms" for kind in kinds) + f" | x {rows[0]} ("
          + " / ".join(kinds) + ") |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for row in rows:
        cells = [f"{medians[(row, kind)]:.2f}" if (row, kind) in medians else "failed" for kind in kinds]
        ratios = [f"x{medians[(rows[0], kind)] / medians[(row, kind)]:.2f}"
                  if (row, kind) in medians and (rows[0], kind) in medians else "-" for kind in kinds]
        print(f"| {row} | " + " | ".join(cells) + " | " + " / ".join(ratios) + " |")
    for key, error in errors.items():
        print(f"{' '.join(key)} failed: {error}")


if __name__ == "__main__":
    main()
