"""`mhyolo quantize`: INT8 from an exported model, then score it against the FP32 one.

Backends: `ort` (ONNX Runtime static QDQ, writes .onnx), `openvino` (NNCF, default or
accuracy-aware, writes .xml + .bin), `rknn` (rknn-toolkit2, writes .rknn; needs
`mhyolo.deploy.rknn`). Calibration images come from the TRAIN split of `--calib`;
right after quantizing, the FP32 and the INT8 model are scored on its VAL split with
the same `validate`, the table is printed, and the scores are written beside the
output as `<out stem>.quant.json` (e.g. `model_int8.onnx` -> `model_int8.quant.json`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from mhyolo.deploy.formats import quantizers
from mhyolo.deploy.sensitivity import SUGGESTED_MIN_SQNR_DB

BACKENDS = tuple(quantizers())  # --backend: the formats of `deploy.formats` that have a quantizer
REPORT_SUFFIX = ".quant.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize", help="INT8 quantization (ONNX Runtime, OpenVINO/NNCF, RKNN) and its accuracy vs FP32",
        description="Quantize an exported model to INT8 with calibration images from the train split of "
                    "--calib, then score FP32 and INT8 on its val split and write <out stem>.quant.json.")
    parser.add_argument("--weights", required=True, type=Path,
                        help="exported model: .onnx (any backend) or OpenVINO .xml (openvino only)")
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--calib", required=True, type=Path, metavar="DATA.yaml",
                        help="dataset: calibration images from its train split, scores on --split")
    parser.add_argument("--out", required=True, type=Path, help="output .onnx / .xml / .rknn")
    parser.add_argument("--calib-images", type=int, default=50, help="number of calibration images (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration image draw (default 0)")
    parser.add_argument("--mode", choices=("default", "accuracy"), default="default",
                        help="openvino: plain NNCF quantization or accuracy-aware (default: default)")
    parser.add_argument("--input", choices=("uint8", "float"), default="uint8",
                        help="openvino: what the INT8 IR takes: the letterboxed uint8 BGR image, converted inside "
                             "the graph (default, faster), or float RGB NCHW in [0, 1] as exported")
    parser.add_argument("--max-drop", type=float, default=0.01,
                        help="accuracy mode: largest absolute drop of mAP@0.5:0.95 (typed for a typed model)")
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                        help="ort: calibration method (default minmax)")
    weight_range = parser.add_mutually_exclusive_group()
    weight_range.add_argument("--full-range-weights", action="store_true",
                              help="ort: 8-bit weights (for CPUs with VNNI or AMX; others saturate). Default: "
                                   "chosen for this machine's CPU")
    weight_range.add_argument("--reduced-range-weights", action="store_true",
                              help="ort: 7-bit weights (safe on any x86 CPU, e.g. to deploy on one without VNNI)")
    parser.add_argument("--min-sqnr", type=float, default=0.0, metavar="DB",
                        help="ort: keep in float the blocks whose activation SQNR on calibration images is below "
                             f"DB (e.g. {SUGGESTED_MIN_SQNR_DB:g}; default 0: every block INT8)")
    parser.add_argument("--float-blocks", nargs="+", default=[], metavar="BLOCK",
                        help="ort: blocks to keep in float, by module name (e.g. /layers.1/; "
                             "benchmarks/int8_blocks.py measures what each one costs)")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="input size; must match the exported model (default: from its metadata)")
    parser.add_argument("--split", default="val", help="split to score FP32 and INT8 on (default val)")
    parser.add_argument("--target", default="rk3588", help="rknn: target platform (default rk3588)")
    parser.set_defaults(func=run)


def report_path(out: Path) -> Path:
    """Where the scores go: `model.onnx` -> `model.quant.json`."""
    return out.with_suffix(REPORT_SUFFIX)


def score(backend: Any, data_yaml: Path, split: str) -> dict[str, Any]:
    """map50 / map50_95 (and the type scores when typed) of `backend` on `split`."""
    from mhyolo.data.dataset import YoloDataset
    from mhyolo.data.spec import load_data_spec
    from mhyolo.errors import ConfigError
    from mhyolo.eval.results import select
    from mhyolo.eval.validate import class_mismatch, validate

    spec = load_data_spec(data_yaml)
    mismatch = class_mismatch(len(backend.names), spec)
    if mismatch:
        raise ConfigError(mismatch)
    class_agnostic = len(backend.names) == 1
    dataset = YoloDataset(spec, split, backend.imgsz, augment=None)
    result = validate(backend, dataset, list(spec.names), class_agnostic=class_agnostic)
    row = select(result.part("detection"), ("map50", "map50_95", "precision", "recall"))
    types = result.part("types")
    if types is not None:
        row.update(select(types, ("cls_accuracy", "typed_map50", "typed_map50_95")))
    return row


def _num(value: Any) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _rows_table(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in ("map50", "map50_95", "cls_accuracy", "typed_map50", "typed_map50_95")
            if any(r.get(k) is not None for r in rows)]
    header = f"{'format':<16} {'size MB':>8} " + " ".join(f"{k:>18}" for k in keys)
    lines = [header]
    base = rows[0]
    for row in rows:
        cells = []
        for k in keys:
            value = row.get(k)
            text = "-" if value is None else f"{value:.4f}"
            if row is not base and value is not None and base.get(k) is not None:
                text += f" ({value - base[k]:+.3f})"
            cells.append(f"{text:>18}")
        lines.append(f"{row['format']:<16} {row['size_mb']:>8.2f} " + " ".join(cells))
    return "\n".join(lines)


def _metadata(args: argparse.Namespace):
    from mhyolo.deploy.formats import format_of_file
    from mhyolo.errors import ConfigError, WeightsError

    if not args.weights.is_file():
        raise WeightsError(f"model file not found: {args.weights}")
    if args.weights.suffix.lower() not in quantizers()[args.backend].quantizes_from:
        raise ConfigError(f"{args.weights}: --backend {args.backend} quantizes an exported .onnx "
                          f"(`mhyolo export --format onnx`)")
    return format_of_file(args.weights).metadata(args.weights)


def _job(args: argparse.Namespace):
    from mhyolo.deploy.formats import QuantizeJob

    reduce_range = True if args.reduced_range_weights else (False if args.full_range_weights else None)
    return QuantizeJob(weights=args.weights, out=args.out, calib=args.calib, calib_images=args.calib_images,
                       seed=args.seed, split=args.split, method=args.method, reduce_range=reduce_range,
                       min_sqnr_db=args.min_sqnr if args.min_sqnr > 0 else None,
                       float_blocks=tuple(args.float_blocks), mode=args.mode, max_drop=args.max_drop,
                       input=args.input, target=args.target)


def _backends(args: argparse.Namespace) -> tuple[Any, Any]:
    """(FP32 reference, INT8 model) as `InferenceBackend`s, both run in full precision where float
    (the INT8 model as `predict` runs it: float layers in the plugin's default precision)."""
    from mhyolo.deploy.formats import LoadOptions, file_format

    row = quantizers()[args.backend]
    reference = file_format(row.reference)
    return (reference.load(args.weights, LoadOptions(precision="f32")),
            row.load(args.out, LoadOptions(precision="auto")))


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():  # a context, not a global switch: callers in the same process keep autograd
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mhyolo.deploy.formats import file_format, file_size_mb, input_size_error
    from mhyolo.errors import ConfigError

    row = quantizers()[args.backend]
    if args.out.suffix.lower() != row.suffixes[0]:
        raise ConfigError(f"{args.out}: --backend {args.backend} writes a {row.suffixes[0]} file")
    if args.calib_images <= 0:
        raise ConfigError(f"--calib-images must be positive, got {args.calib_images}")
    if args.mode == "accuracy" and args.backend != "openvino":
        raise ConfigError("--mode accuracy is OpenVINO/NNCF's accuracy-aware quantization: use --backend openvino")
    meta = _metadata(args)
    if args.imgsz is not None and args.imgsz != meta.imgsz:
        raise input_size_error(args.weights, meta.imgsz, args.imgsz)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = row.quantize(_job(args), meta)
    seconds = time.perf_counter() - started
    print(f"wrote {args.out} ({file_size_mb(args.out):.2f} MB) in {seconds:.0f} s; scoring on '{args.split}'",
          file=sys.stderr)
    fp32, int8 = _backends(args)
    kernels = getattr(int8, "kernels", None)
    if callable(kernels):  # OpenVINO: which convolutions really run as INT8 on this CPU
        from mhyolo.machine import cpu_info

        summary = kernels()
        print(f"executed on {cpu_info().name}: {summary.describe()}", file=sys.stderr)
        info["executed_kernels"] = summary.to_dict()
    try:
        rows = []
        fp32_runtime = file_format(row.reference).quantizer
        for label, backend, path in ((f"fp32 {fp32_runtime}", fp32, args.weights),
                                     (f"int8 {args.backend}", int8, args.out)):
            entry = {"format": label, "path": str(path), "size_mb": round(file_size_mb(path), 3)}
            entry.update({k: _num(v) for k, v in score(backend, args.calib, args.split).items()})
            rows.append(entry)
    finally:
        close = getattr(int8, "close", None)
        if callable(close):
            close()
    delta = {k: rows[1][k] - rows[0][k] for k in rows[0]
             if isinstance(rows[0][k], float) and isinstance(rows[1].get(k), float) and k != "size_mb"}
    report = {"backend": args.backend, "mode": args.mode if args.backend == "openvino" else None,
              "weights": str(args.weights), "output": str(args.out), "data": str(args.calib), "split": args.split,
              "imgsz": meta.imgsz, "calibration": {"split": "train", "images": args.calib_images, "seed": args.seed,
                                                   "method": args.method if args.backend == "ort" else None},
              "max_drop": args.max_drop if args.mode == "accuracy" else None, "quantize_seconds": round(seconds, 1),
              **info, "rows": rows, "delta": delta}
    path = report_path(args.out)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(_rows_table(rows))
    print(f"scores written to {path}", file=sys.stderr)
    return 0
