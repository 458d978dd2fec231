"""`mhyolo train`: fine-tune a YOLOv5 detector (default: COCO YOLOv5n to one class, "ball")."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a detector on a dataset (data.yaml)")
    parser.add_argument("--data", help="dataset data.yaml (from `mhyolo data build`)")
    parser.add_argument("--weights", help="starting weights: official .pt, our .safetensors, or 'none' (default yolov5n.pt)")
    parser.add_argument("--model", help="architecture config (default: the one stored with the weights)")
    parser.add_argument("--act", help="activation of every convolution, replacing the architecture's: silu, relu "
                                      "or leakyrelu (the COCO weights load into any of them)")
    parser.add_argument("--hyp", help="training settings: a YAML file, or a shipped name (hyp, head, joint, multihead); "
                                      "flags override it")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--types-as-classes", action="store_true",
                        help="detect the label ids as classes (nc = number of names) instead of one class 'ball'")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument("--freeze", choices=["detector"],
                       help="phase 2: train only the type heads; the detector stays bit-identical")
    heads.add_argument("--joint", action="store_true",
                       help="train everything with loss = detection + type_weight x type (the default when "
                            "nothing is frozen; stated explicitly to override a --hyp file that freezes)")
    parser.add_argument("--type-weight", type=float, help="lambda of the type loss in joint training")
    parser.add_argument("--teacher", help="distillation teacher (any mhyolo checkpoint or YOLOv5 .pt); "
                                          "with no objective.terms in --hyp, feature imitation on P3 is switched on")
    parser.add_argument("--distill", nargs="+", choices=["imitation", "response_kd"], metavar="TERM",
                        help="distillation terms to switch on with their default settings (imitation, "
                             "response_kd); settings live under objective.terms in --hyp")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (default runs/train)")
    parser.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in RUN from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.config import load_config
    from mhyolo.defaults import training_file
    from mhyolo.errors import ConfigError
    from mhyolo.train.config import TrainConfig
    from mhyolo.train.report import finish_run
    from mhyolo.train.trainer import Trainer, resume_config

    if args.resume:
        config, run_dir = resume_config(args.resume), args.resume
    else:
        overrides = {"data": args.data, "model": args.model, "act": args.act, "epochs": args.epochs,
                     "imgsz": args.imgsz, "batch": args.batch, "workers": args.workers, "seed": args.seed,
                     "device": args.device}
        scratch = args.weights is not None and args.weights.lower() == "none"
        if args.weights is not None and not scratch:
            overrides["weights"] = args.weights
        if args.types_as_classes:
            overrides["single_class"] = False
        config = load_config(TrainConfig, training_file(args.hyp) if args.hyp else None, overrides)
        if scratch:  # set after loading: load_config takes a None override for a flag not given
            config.weights = None
        if args.freeze or args.joint:
            config.freeze = args.freeze
        if args.type_weight is not None:
            config.objective.type_weight = args.type_weight
        if args.teacher is not None:
            config.teacher = args.teacher
        for term in args.distill or ([] if config.objective.terms or not args.teacher else ["imitation"]):
            config.objective.terms.setdefault(term, {})
        if not config.data:
            raise ConfigError("--data is required (a data.yaml from `mhyolo data build`)")
        run_dir = args.out
        if (run_dir / "weights" / "last.safetensors").exists():
            raise ConfigError(f"{run_dir} already holds a run: use --resume {run_dir} or another --out")
    summary = Trainer(config, run_dir, progress=not args.quiet, resume=bool(args.resume)).run()
    finish_run(summary, config)
    return 0
