"""How large the `coco_ball` term is against the detection loss, step by step, to choose its weight.

Trains the demo's multi-head model (shipped `multihead` settings, COCO "sports ball" start, backbone
frozen: configs/pipeline/demo.yaml) for a few optimizer steps on DATA with the term switched on, and
prints per step the values each term reports, the total each adds to the loss and the gradient norm
each sends into the trainable student (the term's weight applied):

    .venv/bin/python benchmarks/coco_keep.py DATA.yaml [--steps 10] [--imgsz 320] [--batch 8] [--weight 1]

Every batch is an optimizer step (no accumulation), so the student moves away from COCO within a
handful of steps; warm-up is as in a run (the bias learning rate starts high). `--weight 0` trains
without the term and still reports its value: how far the student drifts from COCO on its own.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mhyolo.config import load_config
from mhyolo.defaults import training_file
from mhyolo.train.config import TrainConfig
from mhyolo.train.optim import apply_schedule
from mhyolo.train.terms import Step
from mhyolo.train.trainer import Trainer


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--focus", type=float, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    coco_ball = {"weight": args.weight, **({"focus": args.focus} if args.focus is not None else {})}
    config = load_config(TrainConfig, training_file("multihead"), {
        "data": str(args.data), "imgsz": args.imgsz, "batch": args.batch, "workers": 0, "epochs": 12,
        "class_init": 32, "freeze_layers": 10, "optim": {"warmup_epochs": 1.0, "nominal_batch": args.batch},
        "objective": {"terms": {"coco_ball": coco_ball}}})
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, Path(folder), progress=False)
        trainer._setup()
    objective, module = trainer.objective, trainer.module
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    warmup = max(round(config.optim.warmup_epochs * len(trainer.loader)), 100)
    print(f"{args.data}: imgsz {args.imgsz}, batch {args.batch}, coco_ball {coco_ball}; "
          "totals and gradient norms per image, weights applied\n")
    print("| step | box | obj | type | coco_ball | detection+type total | coco_ball total | "
          "grad detection+type | grad coco_ball | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    module.train()
    step_index = 0
    while step_index < args.steps:
        for batch in trainer.loader:
            if step_index >= args.steps:
                break
            started = time.perf_counter()
            apply_schedule(trainer.optimizer, config.optim, 0, config.epochs, step_index, warmup)
            images = batch.images.float().div(255.0)
            raw, features = trainer.model.forward_with_features(images, objective.feature_rows)
            step = Step(outputs=raw, targets=batch.targets, features=features, images=images,
                        assigner=objective.term("detection").loss.assign)
            # `compute`, not the call: at --weight 0 the term still reports how far the student is from COCO
            results = {name: (term.compute(step) if name == "coco_ball" else term(step))
                       for name, term in zip(objective.term_names, objective.terms)}
            supervised = results["detection"].loss + results["type"].loss
            kept = results["coco_ball"].loss
            grads = (grad_norm(supervised, params), grad_norm(kept, params) if kept.requires_grad else 0.0)
            (supervised + kept).backward()
            trainer._optimizer_step()
            logged = {k: float(v) for result in results.values() for k, v in result.logged.items()}
            n = images.shape[0]
            totals = float(supervised.detach()) / n, float(kept.detach()) / n
            print(f"| {step_index} | {logged['box']:.4f} | {logged['obj']:.4f} | {logged['type']:.3f} | "
                  f"{logged['coco_ball']:.5f} | {totals[0]:.4f} | {totals[1]:.5f} | "
                  f"{grads[0] / n:.4f} | {grads[1] / n:.4f} | {time.perf_counter() - started:.1f} |", flush=True)
            step_index += 1


if __name__ == "__main__":
    main()
