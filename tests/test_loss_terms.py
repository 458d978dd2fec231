"""The loss-term seam: a registered term with a layer of its own trains with the student (optimizer,
DDP, resume), reports its own results.csv column, reads features captured inside the training
module's forward, and never reaches `best` or an export."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import terms as toy
from helpers.tiny_data import tiny_ball_dataset
from helpers.training import train_until_killed

from mhyolo.data.augment import AugmentConfig
from mhyolo.errors import ConfigError
from mhyolo.model.weights import load_checkpoint
from mhyolo.model.yolo import YoloModel
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.loss import LossConfig
from mhyolo.train.objective import ObjectiveConfig, TrainingObjective
from mhyolo.train.terms import Step
from mhyolo.train.trainer import Trainer


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("terms") / "data", per_type_train=2, per_type_val=1)


def _config(data: Path, official_weights: Path, epochs: int = 1, **objective) -> TrainConfig:
    return TrainConfig(data=str(data), weights=str(official_weights), model="yolov5n-typehead-lite", epochs=epochs,
                       imgsz=128, batch=2, workers=0, close_mosaic=0, seed=0,
                       optim=OptimConfig(warmup_epochs=0.0, nominal_batch=2), augment=AugmentConfig(mosaic=0.0),
                       objective=ObjectiveConfig(type_weight=0.05, **objective))


class _Snapshot:
    """The adapter's weights at the end of the epoch."""

    def after_epoch(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        self.after = trainer.objective.term(toy.NAME).adapter.weight.detach().clone()


def test_a_registered_term_trains_reports_and_stays_out_of_best(data: Path, official_weights: Path,
                                                                tmp_path: Path) -> None:
    config = _config(data, official_weights, terms={toy.NAME: {"weight": 0.5}})
    snapshot = _Snapshot()
    trainer = Trainer(config, tmp_path / "run", hooks=[snapshot], progress=False)
    trainer._setup()
    initial = trainer.objective.term(toy.NAME).adapter.weight.detach().clone()
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(trainer.objective.term(toy.NAME).adapter.weight) in in_optimizer
    trainer = Trainer(config, tmp_path / "run", hooks=[snapshot], progress=False)
    summary = trainer.run()
    assert not torch.equal(snapshot.after, initial)  # the adapter learned
    with (tmp_path / "run" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:6] == ["epoch", "train/box", "train/obj", "train/cls", "train/type", "train/feat"]
    assert float(rows[0]["train/feat"]) > 0
    best = load_checkpoint(summary.best)
    assert not any("adapter" in name for name in best.model.state_dict()) and not best.extra
    last = load_checkpoint(summary.last)
    adapters = [k for k in last.extra if k.startswith("terms/") and "adapter" in k]
    assert adapters and torch.equal(last.extra[next(k for k in adapters if k.endswith("weight"))], snapshot.after)


def test_the_term_sends_gradient_into_the_student_through_captured_features(official_weights: Path) -> None:
    model = YoloModel("yolov5n-typehead-lite", nc=1, names=["ball"]).train()
    objective = TrainingObjective(model, LossConfig(), 128,
                                  ObjectiveConfig(terms={toy.NAME: {"weight": 1.0}}))
    assert objective.feature_rows == (toy.P3_ROW,)
    term = objective.term(toy.NAME)
    raw, features = model.forward_with_features(torch.rand(2, 3, 128, 128), objective.feature_rows)
    term(Step(outputs=raw, targets=torch.zeros(0, 6), features=features)).loss.backward()
    backbone = model.model[0].conv.weight.grad  # the first row feeds P3
    assert backbone is not None and backbone.abs().sum() > 0
    assert term.adapter.weight.grad.abs().sum() > 0
    assert model.detect.m[0].weight.grad is None  # Detect is after P3: this term alone does not reach it


def test_resume_of_a_run_with_a_term_is_exact(data: Path, official_weights: Path, tmp_path: Path) -> None:
    config = _config(data, official_weights, epochs=2, terms={toy.NAME: {"weight": 0.5}})
    straight = Trainer(config, tmp_path / "straight", progress=False).run()
    train_until_killed(config, tmp_path / "killed")
    resumed = Trainer(config, tmp_path / "killed", progress=False, resume=True).run()
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert any(k.startswith("terms/") for k in a.extra)
    for key, value in a.extra.items():
        assert torch.allclose(value, b.extra[key], atol=1e-6), key


def test_unknown_or_misspelt_terms_are_refused(official_weights: Path) -> None:
    model = YoloModel("yolov5n", nc=1, names=["ball"])
    with pytest.raises(ConfigError, match="unknown loss term 'imitaton'"):
        TrainingObjective(model, LossConfig(), 128, ObjectiveConfig(terms={"imitaton": {}}))
    with pytest.raises(ConfigError, match="weigth"):
        TrainingObjective(model, LossConfig(), 128, ObjectiveConfig(terms={toy.NAME: {"weigth": 1.0}}))
    with pytest.raises(ConfigError, match="always on"):
        TrainingObjective(model, LossConfig(), 128, ObjectiveConfig(terms={"type": {}}))


@pytest.mark.slow
def test_two_process_ddp_with_a_term_reduces_its_gradients(data: Path, tmp_path: Path) -> None:
    worker = Path(__file__).parent / "helpers" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
               str(worker), str(data), str(tmp_path), toy.NAME]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # student and adapter identical: gradients were reduced
    assert all(rank["row"]["train/feat"] > 0 for rank in ranks)  # the term saw features on both ranks
