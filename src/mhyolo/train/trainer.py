"""The training loop: data, loss, backward, step; everything else is a hook.

`Trainer.run()` trains for `config.epochs`, validating the EMA model, appending
to `results.csv` and writing `weights/last.safetensors` (resumable) and
`weights/best.safetensors` (EMA weights only) after every epoch. Under `torchrun`
it trains with DistributedDataParallel (gloo on CPU, NCCL on GPU); only rank 0
validates and writes files.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from mhyolo.config import from_dict, to_dict
from mhyolo.data.dataset import YoloDataset, build_dataloader
from mhyolo.data.spec import load_data_spec
from mhyolo.errors import ConfigError, WeightsError
from mhyolo.eval.results import fitness
from mhyolo.eval.validate import validate
from mhyolo.model.weights import load_checkpoint, save_checkpoint
from mhyolo.train.config import TrainConfig
from mhyolo.train.distill import Teacher
from mhyolo.train.early_stop import EarlyStopping
from mhyolo.train.ema import ModelEMA
from mhyolo.train.multiscale import MultiScale
from mhyolo.model.freezing import FreezeSpec
from mhyolo.train.module import TrainingModule
from mhyolo.train.objective import TrainingObjective
from mhyolo.train.optim import apply_schedule, build_optimizer
from mhyolo.train.state import build_training_model, restore_optimizer, save_training_state

METRIC_COLUMNS = ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95", "metrics/cls_accuracy",
                  "metrics/image_accuracy", "metrics/typed_mAP50", "lr", "seconds")


def result_columns(part_names: Sequence[str]) -> tuple[str, ...]:
    """`results.csv`'s header: one `train/<column>` per value the loss terms report, then the metrics."""
    return ("epoch", *(f"train/{name}" for name in part_names), *METRIC_COLUMNS)


RESULT_COLUMNS = result_columns(("box", "obj", "cls", "type"))  # the detection and type terms
GRAD_CLIP = 10.0


class Hook(Protocol):
    """Called by the trainer; a hook may raise to stop training (the last checkpoint stays valid)."""

    def after_epoch(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None: ...


@dataclass
class TrainSummary:
    run_dir: Path
    best: Path
    last: Path
    epochs_run: int
    best_fitness: float
    rows: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> _Distributed:
        """torchrun announces the process group through RANK / WORLD_SIZE."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size())


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: Path, hooks: Sequence[Hook] = (), progress: bool = True,
                 resume: bool = False) -> None:
        self.config, self.run_dir, self.hooks, self.progress = config, Path(run_dir), list(hooks), progress
        self.weights_dir = self.run_dir / "weights"
        self.last_path, self.best_path = self.weights_dir / "last.safetensors", self.weights_dir / "best.safetensors"
        self.resume = resume
        self.dist = _Distributed.from_environment(config.device)
        self.device = torch.device(config.device)
        self.result_columns = RESULT_COLUMNS  # replaced by the objective's own columns at setup

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        spec = load_data_spec(cfg.data)
        self.spec = spec
        self.det_names = ["ball"] if cfg.single_class else list(spec.names)
        self.train_set = YoloDataset(spec, "train", cfg.imgsz, augment=cfg.augment, seed=cfg.seed,
                                     progress=self.progress)
        self.val_set = (YoloDataset(spec, "val", cfg.imgsz, augment=None, seed=cfg.seed, progress=self.progress)
                        if self.dist.main else None)
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed)
        self.loader = build_dataloader(self.train_set, batch_size=cfg.batch, shuffle=False, workers=cfg.workers,
                                       seed=cfg.seed, sampler=self.sampler)
        frozen = ("the detector" if cfg.freeze == "detector"
                  else f"the first {cfg.freeze_layers} rows (freeze_layers)" if cfg.freeze_layers else None)
        model, self.weights_source = build_training_model(cfg.weights, cfg.model, self.det_names, cfg.class_init,
                                                          act=cfg.act, frozen=frozen)
        self.model = model.to(self.device)  # the student: what the EMA averages and `best` holds
        if cfg.freeze == "detector" and not any(name in self.model.heads for name in ("type", "image_type")):
            raise ConfigError("--freeze detector needs a model with a type head (e.g. --model "
                              "yolov5n-typehead): nothing would train")
        freeze = FreezeSpec(detector=cfg.freeze == "detector", rows=cfg.freeze_layers)
        self.frozen = freeze.apply(self.model)
        self.teacher = Teacher.load(cfg.teacher, self.device) if cfg.teacher else None
        self.objective = TrainingObjective(self.model, cfg.loss, cfg.imgsz, cfg.objective,
                                           detector_trains=freeze.detector_trains, teacher=self.teacher)
        # what trains: the student plus the terms' own layers (optimizer, DDP, clipping, `last`)
        self.module = TrainingModule(self.model, self.objective, freeze).to(self.device)
        self.result_columns = result_columns(self.objective.part_names)
        self.accumulate = max(round(cfg.optim.nominal_batch / (cfg.batch * self.dist.world_size)), 1)
        # `batch` is per process: a step sees batch x world_size x accumulate images, which scales the decay
        self.optimizer = build_optimizer(self.module, cfg.optim, cfg.batch * self.dist.world_size, self.accumulate)
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau, copy_only=self.frozen)
        self.multi_scale = (MultiScale(cfg.imgsz, int(self.model.stride.max()), *cfg.multi_scale, seed=cfg.seed)
                            if cfg.multi_scale else None)
        self.start_epoch, self.best_fitness = 0, -1.0
        if self.resume:
            self._restore()
        self.net = DistributedDataParallel(self.module) if self.dist.world_size > 1 else self.module

    def _restore(self) -> None:
        if not self.last_path.is_file():
            raise WeightsError(f"cannot resume: {self.last_path} does not exist")
        checkpoint = load_checkpoint(self.last_path)
        meta = checkpoint.metadata
        raw = {k[len("train/"):]: v for k, v in checkpoint.extra.items() if k.startswith("train/")}
        self.model.load_state_dict(raw, strict=True)
        terms = {k[len("terms/"):]: v for k, v in checkpoint.extra.items() if k.startswith("terms/")}
        if terms:  # the loss terms' own layers (adapters); checkpoints without any have none to restore
            self.objective.load_state_dict(terms, strict=True)
        self.ema.module.load_state_dict(checkpoint.model.state_dict(), strict=True)
        self.ema.updates = int(meta["ema_updates"])
        restore_optimizer(self.optimizer, checkpoint.extra, meta["optimizer"])
        self.start_epoch = int(meta["epoch"]) + 1
        self.best_fitness = float(meta["best_fitness"])

    # ------------------------------------------------------------------- loop
    def run(self) -> TrainSummary:
        self._setup()
        cfg = self.config
        if self.dist.main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, float]] = []
        batches = len(self.loader)
        warmup = max(round(cfg.optim.warmup_epochs * batches), 100) if cfg.optim.warmup_epochs > 0 else 0
        last_step = self.start_epoch * batches - 1
        stopper = EarlyStopping(cfg.patience, best_epoch=self.start_epoch - 1)
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.perf_counter()
            self.train_set.set_mosaic(cfg.epochs - epoch > cfg.close_mosaic)
            self.train_set.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            self.module.train()  # frozen rows stay in eval mode (FreezeSpec.hold)
            sums = torch.zeros(len(self.objective.part_names))
            bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not (self.progress and self.dist.main), leave=True)
            for i, batch in enumerate(bar):
                step = i + batches * epoch
                apply_schedule(self.optimizer, cfg.optim, epoch, cfg.epochs, step, warmup)
                images = batch.images.to(self.device).float().div_(255.0)
                if self.multi_scale is not None:
                    images = self.multi_scale(images, epoch, i)
                targets = batch.targets.to(self.device)
                ignore = batch.ignore.to(self.device) if len(batch.ignore) else None
                loss, parts = self.net(images, targets, ignore)
                (loss * self.dist.world_size).backward()
                if step - last_step >= self.accumulate or i == batches - 1:
                    self._optimizer_step()
                    last_step = step
                sums += torch.stack([parts[name] for name in self.objective.part_names]).cpu()
                mean = sums / (i + 1)
                bar.set_postfix({name: f"{value:.4f}" for name, value in zip(self.objective.part_names, mean)})
            row = {"epoch": epoch + 1, **{f"train/{name}": float(value)
                                          for name, value in zip(self.objective.part_names, mean)},
                   "lr": self.optimizer.param_groups[0]["lr"]}
            improved = self._end_of_epoch(epoch, row, started)
            rows.append(row)
            for hook in self.hooks:
                hook.after_epoch(self, epoch, row)
            if self._agree(stopper.update(epoch, improved) if self.dist.main else False):
                break
        if self.dist.world_size > 1:
            dist.barrier()
        return TrainSummary(self.run_dir, self.best_path, self.last_path, len(rows), self.best_fitness, rows)

    def _optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm=GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)

    def _agree(self, stop: bool) -> bool:
        """Rank 0's stop decision, the same on every rank (each rank must leave the loop together)."""
        if self.dist.world_size == 1:
            return stop
        flag = torch.tensor([1 if stop else 0], dtype=torch.int32)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _end_of_epoch(self, epoch: int, row: dict[str, float], started: float) -> bool | None:
        """Validate, log and checkpoint on rank 0; returns whether fitness improved, None when this
        epoch was not validated here (another rank, or not a validation epoch)."""
        cfg = self.config
        improved: bool | None = None
        if self.dist.main:
            last_epoch = epoch == cfg.epochs - 1
            if (epoch + 1) % cfg.val_every == 0 or last_epoch:
                result = validate(self.ema.module, self.val_set, list(self.spec.names), batch_size=cfg.batch,
                                  conf=cfg.val_conf, iou=cfg.val_iou, max_det=cfg.val_max_det,
                                  class_agnostic=cfg.single_class, progress=self.progress)
                m = result.metrics
                row.update({"metrics/precision": m.precision, "metrics/recall": m.recall,
                            "metrics/mAP50": m.map50, "metrics/mAP50-95": m.map50_95})
                if result.types is not None:
                    t = result.types
                    row.update({"metrics/cls_accuracy": t.cls_accuracy, "metrics/image_accuracy": t.image_accuracy,
                                "metrics/typed_mAP50": t.typed_map50})
                score = fitness(result.summary())  # detection and type judged together when the model types
                improved = score > self.best_fitness
                self.best_fitness = max(self.best_fitness, score)
            row["seconds"] = time.perf_counter() - started
            self._append_results(row)
            meta = {"epoch": epoch, "best_fitness": self.best_fitness, "ema_updates": self.ema.updates,
                    "train_config": to_dict(cfg), "weights_source": self.weights_source, "results": row}
            save_training_state(self.last_path, self.ema.module, self.model, self.optimizer, meta,
                                terms=self.module.term_state())
            if improved:
                save_checkpoint(self.best_path, self.ema.module, meta)
        if self.dist.world_size > 1:
            dist.barrier()
        return improved

    def _append_results(self, row: dict[str, float]) -> None:
        """One row per epoch; a file written with other columns (an older run) is rewritten
        with the current ones first, so every row lines up with the header."""
        path = self.run_dir / "results.csv"
        rows: list[dict[str, str]] = []
        stale = not path.exists()
        if not stale:
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                stale = tuple(reader.fieldnames or ()) != self.result_columns
                if stale:
                    rows = list(reader)
        if stale:
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.result_columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.result_columns, extrasaction="ignore")
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def resume_config(run_dir: Path) -> TrainConfig:
    """The configuration a run was started with, from its last checkpoint."""
    path = Path(run_dir) / "weights" / "last.safetensors"
    if not path.is_file():
        raise WeightsError(f"cannot resume: {path} does not exist")
    from mhyolo.model.weights import read_metadata

    meta: dict[str, Any] = read_metadata(path)
    if "train_config" not in meta:
        raise ConfigError(f"{path}: not a training checkpoint (no train_config)")
    return from_dict(TrainConfig, meta["train_config"], str(path))
