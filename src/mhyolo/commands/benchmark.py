"""`mhyolo benchmark`: one model in every deployment format, in one table.

Each format's file is made once into --out (and reused by name on later runs), scored on
the validation split with the shared post-processing, and timed together with the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mhyolo.commands.scale_args import add_multiscale_arguments, multiscale_settings
from mhyolo.defaults import DEFAULT_IMGSZ
from mhyolo.infer.input_size import imgsz_arg, split_imgsz


def register(subparsers: argparse._SubParsersAction) -> None:
    from mhyolo.bench.formats import FORMATS

    parser = subparsers.add_parser(
        "benchmark", help="size, latency, throughput and accuracy of any model in every format",
        description="Make each format of a model (PyTorch, ONNX Runtime FP32/INT8, OpenVINO FP32/BF16/INT8, "
                    "RKNN INT8 in the simulator), score it on the validation split and time it (the model call "
                    "alone, one real image end to end, and frames/s of the throughput mode `predict` uses on "
                    "folders and videos); writes "
                    "benchmark.md, benchmark.json and benchmark.png into --out. A format that cannot be made "
                    "or run becomes a 'skipped' row with its reason. Where the model's classes do not line up with the "
                    "dataset's (or there is none), every format is still timed and the header says why accuracy "
                    "is empty. The header names the CPU and its INT8-relevant instruction sets.")
    parser.add_argument("--weights", required=True, help="official .pt or mhyolo .safetensors")
    parser.add_argument("--data", type=Path, help="dataset data.yaml (val split scored, train split used for INT8 "
                                                  "calibration); without it every format is timed, not scored")
    parser.add_argument("--no-accuracy", action="store_true",
                        help="time only: no scoring (--data, if given, still calibrates the INT8 formats)")
    parser.add_argument("--calib-dir", type=Path, metavar="FOLDER",
                        help="with no --data: photos to calibrate INT8 formats on (default: generated images, "
                             "which time correctly but say nothing of INT8 accuracy)")
    parser.add_argument("--imgsz", type=imgsz_arg, default=None,
                        help=f"square input size (default: the size the model was trained at, else {DEFAULT_IMGSZ}); "
                             "'native': formats made at that size, and where the runtime takes any shape each "
                             "image scored and timed at its own long side, kept within [that size, 1280]")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"),
                        help="folder for the converted files and the report (default: runs/benchmark)")
    parser.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS), metavar="FORMAT",
                        help=f"formats to run, in table order (default: all of {', '.join(FORMATS)})")
    parser.add_argument("--runs", type=int, default=30,
                        help="timed calls of each kind per format, split over 3 rounds of consecutive calls, formats "
                             "one after another (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each round's block (default: 3)")
    parser.add_argument("--threads", type=int, help="CPU threads for every runtime (default: PyTorch's setting)")
    parser.add_argument("--calib-images", type=int, default=50, help="INT8 calibration images (default: 50)")
    parser.add_argument("--detector", type=Path,
                        help="detector-only weights also timed in PyTorch and ONNX Runtime FP32, "
                             "so the heads' overhead is a ratio from the same run (default: the model "
                             "itself without its type heads)")
    parser.add_argument("--no-detector", action="store_true", help="no detector-only rows")
    parser.add_argument("--classifier", type=Path,
                        help="crop classifier (.safetensors) behind the one-class --weights: every row is the "
                             "two-stage model, the classifier in the detector's runtime (PyTorch, ONNX Runtime "
                             "FP32 / INT8)")
    parser.add_argument("--balls", type=int, nargs="*", metavar="N",
                        help="with --data: also time whole images (letterbox, model, NMS, types) holding N pasted "
                             "ball crops, e.g. --balls 1 4 16 (the default with --classifier; none otherwise)")
    parser.add_argument("--streams", type=int, metavar="N",
                        help="throughput mode: model calls in flight (default: the runtime's choice; OpenVINO's "
                             "throughput hint, 2 elsewhere)")
    add_multiscale_arguments(parser, several_merges=True)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.bench.run import BenchSettings, run_benchmark
    from mhyolo.model.weights import trained_imgsz

    multiscale = multiscale_settings(args, every_rule_by_default=True)
    requested, native = split_imgsz(args.imgsz)
    imgsz = requested or trained_imgsz(args.weights) or DEFAULT_IMGSZ
    settings = BenchSettings(weights=Path(args.weights), data=args.data, imgsz=imgsz, out=args.out,
                             formats=args.formats, runs=args.runs, warmup=args.warmup, threads=args.threads,
                             calib_images=args.calib_images, detector=args.detector,
                             own_detector=not args.no_detector, progress=not args.quiet,
                             accuracy=not args.no_accuracy, calib_dir=args.calib_dir, classifier=args.classifier,
                             balls=tuple(args.balls) if args.balls is not None else None, streams=args.streams,
                             multiscale=tuple(multiscale), native=native)
    result = run_benchmark(settings)
    print(result.paths["markdown"].read_text())
    return 0
