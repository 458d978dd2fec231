"""`mhyolo val`: precision, recall, mAP@0.5 and mAP@0.5:0.95 of any weights on a dataset split, overall and
per ball size (original-image pixels)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhyolo.commands.inference_args import add_slice_arguments, slice_settings
from mhyolo.commands.scale_args import add_multiscale_arguments, multiscale_settings
from mhyolo.infer.input_size import imgsz_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("val", help="score weights on a dataset split (COCO mAP)")
    parser.add_argument("--data", required=True, help="dataset data.yaml")
    parser.add_argument("--weights", required=True,
                        help="official .pt, our .safetensors, or an exported .onnx / OpenVINO .xml")
    parser.add_argument("--split", default="val", help="split to score (default val)")
    parser.add_argument("--imgsz", type=imgsz_arg, default=None,
                        help="input size: a number, or 'native': each image at its own long side, kept within [the "
                             "size the model was trained at, 1280]. Default, for a model that takes any input size "
                             "(without --slice / --scales / --type-min-score): each image at the size the model was "
                             "trained at and at its own size, boxes merged by ball size; the size an exported model "
                             "was made for otherwise")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--conf", type=float, default=0.001)
    parser.add_argument("--iou", type=float, default=0.6)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classifier", help="crop classifier (.safetensors from `mhyolo classify train`, or its "
                                             ".onnx) typing each box of the one-class --weights: the two-stage model")
    parser.add_argument("--type-min-score", type=float, metavar="S",
                        help="with --classifier: classify only the boxes scoring >= S (at most 0.25); the rest stay "
                             "untyped and out of the typed mAP, which is then the one of a run at --conf S, every "
                             "other figure unchanged (default: every box classified, the exact typed mAP); whole images at "
                             "one size (the trained size unless --imgsz N)")
    add_slice_arguments(parser)
    add_multiscale_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="also write PR curve and prediction grid here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():  # a context, not a global switch: callers in the same process keep autograd
        return _run(args)


def _run(args: argparse.Namespace) -> int:

    from mhyolo.data.spec import load_data_spec
    from mhyolo.infer.assemble import InferenceSettings
    from mhyolo.runtime.model import InferenceModel

    slicing = slice_settings(args)
    scaled = multiscale_settings(args)
    model = InferenceModel.load(args.weights, device=args.device, classifier=args.classifier)
    spec = load_data_spec(args.data)
    class_agnostic = len(model.names) == 1
    settings = InferenceSettings(conf=args.conf, iou=args.iou, max_det=args.max_det, batch_size=args.batch,
                                 slicing=slicing, scales=scaled[0] if scaled else None)
    result = model.score(spec, args.split, settings, args.imgsz, type_min_score=args.type_min_score,
                         progress=not args.json)
    m = result.metrics
    summary = result.summary()
    if args.plots:
        from mhyolo.train.report import write_validation_plots

        write_validation_plots(result, list(spec.names) if not class_agnostic else ["ball"], args.plots)
        if result.types is not None:
            result.types.write_plots(args.plots)
    if args.json:
        print(json.dumps(summary))
    else:
        print(m.table())
        print(m.size_table())
        negatives = result.negatives
        if negatives.images:
            print(f"negative images: {negatives.images}, detections at conf >= {negatives.conf}: "
                  f"{negatives.false_positives} ({negatives.per_image:.3f} per image, "
                  f"{negatives.images_with_false_positives} images with any)")
        if result.types is not None:
            print(result.types.table())
    return 0
