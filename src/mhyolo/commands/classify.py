"""`mhyolo classify train|val`: a crop classifier on a dataset's ground-truth boxes (the second
stage of a detector + classifier model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify", help="train, score and export a crop classifier (the two-stage model's second stage)",
        description="A classifier of crops cut around each ground-truth box (square, with a context margin), "
                    "for a one-class detector's boxes: `--classifier` in val, predict and benchmark.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train on the crops of a dataset's train split",
                               description="Train on crops of the train split's boxes, validate each epoch on the "
                                           "val split's; writes results.csv, curves.png, confusion_matrix.png, "
                                           "metrics.json and weights/best|last.safetensors into --out.")
    train.add_argument("--data", required=True, help="dataset data.yaml (label ids are the types)")
    train.add_argument("--preset", help="shipped settings (seed002-model1: max pool + Adam 1e-3; seed002-model2: "
                                        "avg pool + SGD 0.01 momentum 0.8) or a YAML file; flags override it")
    train.add_argument("--model", help="a timm model name (default resnet26d) or yolov5n-backbone (the COCO-"
                                       "pretrained YOLOv5n backbone with a pooled linear head)")
    train.add_argument("--pool", choices=("avg", "max"), help="global pooling (default avg)")
    train.add_argument("--optim", choices=("sgd", "adam"), help="optimizer (default sgd)")
    train.add_argument("--lr", type=float, help="learning rate (default 0.01 SGD, 0.001 Adam)")
    train.add_argument("--momentum", type=float, help="SGD momentum (default 0.8)")
    train.add_argument("--epochs", type=int, help="default 5")
    train.add_argument("--batch", type=int, help="default 32")
    train.add_argument("--imgsz", type=int, help="crop side in pixels (default 224)")
    train.add_argument("--margin", type=float, help="context around each box, share of its long side per side "
                                                    "(default 0.2)")
    train.add_argument("--pretrained", action="store_true", default=None,
                       help="timm's ImageNet weights (needs the Hugging Face hub; fails with a message when it "
                            "cannot be reached); yolov5n-backbone always starts from the local COCO weights")
    train.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                       help="no flip / shift / scale of the training crops")
    train.add_argument("--seed", type=int)
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    val = actions.add_parser("val", help="accuracy, per-type P/R/F1 and confusion matrix on a split's crops")
    val.add_argument("--weights", required=True, help="classifier .safetensors (or an exported .onnx)")
    val.add_argument("--data", required=True, help="dataset data.yaml")
    val.add_argument("--split", default="val")
    val.add_argument("--plots", type=Path, metavar="DIR", help="write confusion_matrix.png here")
    val.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    val.set_defaults(func=run_val)

    export = actions.add_parser("export", help="write the classifier as ONNX (and INT8), checked against PyTorch",
                                description="ONNX with a dynamic batch of crops (FP32, checked to 1e-4 against "
                                            "PyTorch); with --int8, an ONNX Runtime static INT8 copy calibrated "
                                            "on crops of --data's train split and checked on its val crops.")
    export.add_argument("--weights", required=True, help="classifier .safetensors")
    export.add_argument("--out", type=Path, help="the .onnx to write (default: beside the weights)")
    export.add_argument("--int8", action="store_true", help="also write NAME_int8.onnx (needs --data)")
    export.add_argument("--data", help="dataset whose crops calibrate (train) and check (val) the export")
    export.add_argument("--calib-crops", type=int, default=64, help="calibration crops (default 64)")
    export.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    from mhyolo.classify.train import load_classify_config, train_classifier

    overrides = {key: getattr(args, key) for key in ("data", "model", "pool", "optim", "lr", "momentum", "epochs",
                                                     "batch", "imgsz", "margin", "pretrained", "augment", "seed")}
    config = load_classify_config(args.preset, overrides)
    result = train_classifier(config, args.out, progress=not args.quiet)
    best = result.metrics["best"]
    print(f"best weights: {result.best} (val accuracy {best['val']['accuracy']:.3f}"
          + "".join(f", {split} {scores['accuracy']:.3f}" for split, scores in best.items() if split != "val") + ")")
    return 0


def run_val(args: argparse.Namespace) -> int:
    from mhyolo.classify.backend import load_classifier
    from mhyolo.infer.crop_types import check_types_match
    from mhyolo.classify.data import split_crops, type_names
    from mhyolo.classify.evaluate import score_crops
    from mhyolo.data.spec import load_data_spec

    classifier = load_classifier(args.weights)
    spec = load_data_spec(args.data)
    check_types_match(classifier, type_names(spec), str(spec.yaml_path))
    crops = split_crops(spec, args.split, classifier.imgsz, classifier.margin, progress=not args.json)
    scores = score_crops(classifier, crops)
    if args.plots:
        scores.plot(Path(args.plots) / "confusion_matrix.png", title=f"Confusion matrix ({args.split})")
    print(json.dumps(scores.to_dict()) if args.json else scores.table())
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mhyolo.classify.export import export_checked

    if args.int8 and not args.data:
        from mhyolo.errors import ConfigError

        raise ConfigError("--int8 needs --data (its train crops calibrate the INT8 copy)")
    out = args.out or Path(args.weights).with_suffix(".onnx")
    for done in export_checked(Path(args.weights), out, data=args.data, int8=args.int8, calib_crops=args.calib_crops):
        print(f"{done.path}: max abs diff {done.max_abs_diff:.2g} against PyTorch, same type on "
              f"{done.agreement:.1%} of the check crops")
    return 0
