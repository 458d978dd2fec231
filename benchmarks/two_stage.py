"""The multi-head model against the two-stage alternative (one-class detector + crop classifier)
and the nc=3 detector: accuracy on two splits, whole-image latency at 1, 4 and 16 balls in PyTorch
and ONNX Runtime (every model and runtime interleaved in one run), file sizes.

    .venv/bin/python benchmarks/two_stage.py --data FOLD/data.yaml --multihead MULTI.safetensors \\
        [--nc3 NC3.safetensors] --classifier NAME=CLS.safetensors [--classifier ...] \\
        [--imgsz 320] [--splits val test] [--runs 20] [--out runs/two_stage]

The two-stage models use the multi-head model's own detector part (its type head dropped, the
same detector tensors), so their boxes and mAP are the multi-head model's and only the typing
differs. Whole images are real ball crops of the dataset pasted on grey (`bench.ball_images`);
each call is letterbox, model, NMS and types (for a two-stage model also the crops and the
classifier), at conf 0.25. Accuracy is scored at --val-conf (0.01) for every model: at
val's usual 0.001 the detector keeps ~140 boxes an image, each one a classifier call (on the
demo fold's val split mAP50 0.8291 against 0.8294, typed mAP50 0.825 against 0.826 for the
multi-head model). Writes two_stage.json and two_stage.md into --out.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

import torch

from mhyolo.bench.ball_images import BALL_COUNTS, ball_images
from mhyolo.deploy.formats import file_size_mb
from mhyolo.bench.timing import interleaved_times
from mhyolo.classify.backend import load_classifier
from mhyolo.classify.export import export_classifier_onnx
from mhyolo.data.spec import load_data_spec
from mhyolo.deploy.onnx_export import export_onnx
from mhyolo.eval.validate import score_split
from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend
from mhyolo.infer.assemble import InferenceSettings, build_predictor
from mhyolo.machine import cpu_info
from mhyolo.model.weights import load_model, save_checkpoint
from mhyolo.model.yolo import detector_part

CONF = 0.25


def _slug(name: str) -> str:
    """A file name for a model's label (weights files are often all called best.safetensors)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _onnx(weights: Path, target: Path, imgsz: int) -> Path:
    if not target.is_file():
        export_onnx(load_model(weights), target, imgsz=imgsz)
    return target


def _models(args: argparse.Namespace, out: Path) -> dict[str, dict[str, Any]]:
    """name -> {weights, classifier (or None), onnx, classifier_onnx}."""
    multihead = Path(args.multihead)
    detector = out / "detector-part.safetensors"
    if not detector.is_file():
        save_checkpoint(detector, detector_part(load_model(multihead)), {"derived_from": str(multihead)})
    models = {"multi-head": {"weights": multihead, "classifier": None}}
    if args.nc3:
        models["nc=3 detector"] = {"weights": Path(args.nc3), "classifier": None}
    for item in args.classifier:
        name, path = item.split("=", 1)
        models[f"two-stage ({name})"] = {"weights": detector, "classifier": Path(path)}
    for name, entry in models.items():
        entry["onnx"] = _onnx(entry["weights"], out / f"{_slug(name)}-{args.imgsz}.onnx", args.imgsz)
        if entry["classifier"] is not None:
            target = out / f"{_slug(name)}-classifier.onnx"
            if not target.is_file():
                export_classifier_onnx(entry["classifier"], target)
            entry["classifier_onnx"] = target
    return models


def _accuracy(models: dict[str, dict[str, Any]], data: Path, splits: list[str], imgsz: int, conf: float
              ) -> dict[str, Any]:
    spec = load_data_spec(data)
    scores: dict[str, Any] = {}
    for name, entry in models.items():
        backend = load_model(entry["weights"])
        classifier = load_classifier(entry["classifier"]) if entry["classifier"] else None
        for split in splits:
            result = score_split(backend, spec, imgsz, split, progress=False, classifier=classifier, conf=conf)
            types = result.types
            scores.setdefault(name, {})[split] = {
                "map50": result.metrics.map50, "map50_95": result.metrics.map50_95,
                "cls_accuracy": types.cls_accuracy if types else None,
                "typed_map50": types.typed_map50 if types else None}
            print(f"{name} {split}: {scores[name][split]}", flush=True)
    return scores


def _latency(models: dict[str, dict[str, Any]], data: Path, imgsz: int, runs: int, warmup: int, threads: int
             ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    images = ball_images(load_data_spec(data), BALL_COUNTS)
    calls, kept = {}, {}
    for name, entry in models.items():
        runtimes = {"PyTorch": (load_model(entry["weights"]).fuse(),
                                load_classifier(entry["classifier"]) if entry["classifier"] else None),
                    "ONNX Runtime": (OnnxRuntimeBackend(entry["onnx"], threads=threads),
                                     load_classifier(entry["classifier_onnx"], threads=threads)
                                     if entry["classifier"] else None)}
        for runtime, (backend, classifier) in runtimes.items():
            predictor = build_predictor(backend, imgsz, InferenceSettings(conf=CONF), classifier=classifier)
            for count, image in images.items():
                key = f"{name} | {runtime} | {count}"
                kept[key] = len(predictor.predict([image])[0])
                calls[key] = lambda p=predictor, im=image: p.predict([im])
    times, errors = interleaved_times(calls, runs, warmup, progress=True, keep_going=False)
    table: dict[str, dict[str, float]] = {}
    for key, values in times.items():
        name, runtime, count = key.split(" | ")
        table.setdefault(f"{name} | {runtime}", {})[count] = statistics.median(values)
    boxes: dict[str, dict[str, int]] = {}
    for key, value in kept.items():
        name, runtime, count = key.split(" | ")
        boxes.setdefault(f"{name} | {runtime}", {})[count] = value
    return table, boxes


def _sizes(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, entry in models.items():
        extra = entry["classifier"]
        out[name] = {"safetensors_mb": file_size_mb(entry["weights"]) + (file_size_mb(extra) if extra else 0.0),
                     "onnx_mb": file_size_mb(entry["onnx"])
                     + (file_size_mb(entry["classifier_onnx"]) if extra else 0.0)}
    return out


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Multi-head against two-stage ({result['machine']})", "",
             f"imgsz {result['imgsz']}; data `{result['data']}`; accuracy at score threshold "
             f"{result['val_conf']} (type accuracy: matched balls of boxes scoring >= 0.25).", ""]
    splits = result["splits"]
    head = ["model"] + [f"{s}: {k}" for s in splits for k in ("type acc", "typed mAP50", "mAP50")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, per_split in result["accuracy"].items():
        cells = [name]
        for split in splits:
            row = per_split[split]
            cells += ["–" if row[k] is None else f"{row[k]:.3f}" for k in ("cls_accuracy", "typed_map50", "map50")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = [str(c) for c in BALL_COUNTS]
    lines += ["", f"Whole image, median ms ({result['runs']} interleaved rounds, {result['threads']} thread(s), "
              f"conf {CONF}; in brackets the boxes kept), and the ms each more kept box costs (between the first and "
              "the last image):", "",
              "| model | runtime | " + " | ".join(f"{c} ball(s)" for c in counts) + " | ms per kept box |",
              "|---|---|" + "---|" * (len(counts) + 1)]
    for key, values in result["latency_ms"].items():
        name, runtime = key.split(" | ")
        boxes = result["boxes"][key]
        kept = boxes[counts[-1]] - boxes[counts[0]]
        slope = (values[counts[-1]] - values[counts[0]]) / kept if kept else float("nan")
        lines.append(f"| {name} | {runtime} | " + " | ".join(f"{values[c]:.1f} ({boxes[c]})" for c in counts)
                     + f" | {slope:.2f} |")
    lines += ["", "| model | safetensors MB | ONNX MB |", "|---|---|---|"]
    for name, size in result["sizes"].items():
        lines.append(f"| {name} | {size['safetensors_mb']:.1f} | {size['onnx_mb']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--multihead", required=True)
    parser.add_argument("--nc3")
    parser.add_argument("--classifier", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--val-conf", type=float, default=0.01,
                        help="score threshold of the accuracy runs (default 0.01: at val's 0.001 the detector keeps "
                             "~140 boxes an image, ~24 at 0.01, and every one is a classifier call)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("runs/two_stage"))
    parser.add_argument("--parts", nargs="*", choices=("accuracy", "latency"), default=["accuracy", "latency"],
                        help="what to measure now (none: only write the tables again); parts measured earlier "
                             "into --out are kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    models = _models(args, args.out)
    saved = args.out / "two_stage.json"
    result = json.loads(saved.read_text()) if saved.is_file() else {"accuracy": {}}  # parts run separately
    if "accuracy" in args.parts:
        result["accuracy"].update(_accuracy(models, Path(args.data), args.splits, args.imgsz, args.val_conf))
    if "latency" in args.parts:
        with torch.inference_mode():
            result["latency_ms"], result["boxes"] = _latency(models, Path(args.data), args.imgsz, args.runs,
                                                             args.warmup, args.threads)
        result.update(runs=args.runs, threads=args.threads, machine=cpu_info(args.threads).describe())
    result.update(imgsz=args.imgsz, data=args.data, val_conf=args.val_conf, splits=args.splits,
                  sizes=_sizes(models), models={name: {k: str(v) for k, v in entry.items()}
                                                for name, entry in models.items()})
    saved.write_text(json.dumps(result, indent=2))
    if "latency_ms" not in result:
        return
    text = _markdown(result)
    (args.out / "two_stage.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
