"""Distillation: the imitation mask and loss and the response-KD losses on hand values, a frozen
teacher that never changes, gradients that reach the student and the adapter (also under DDP), and
clear errors for a teacher that cannot teach."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.models import sports_ball_model
from helpers.tiny_data import tiny_ball_dataset
from helpers.training import train_until_killed

from mhyolo.data.augment import AugmentConfig
from mhyolo.errors import ConfigError
from mhyolo.model.weights import load_checkpoint, save_checkpoint
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.distill.imitation import batch_masks, imitation_loss, imitation_mask
from mhyolo.train.distill.response_kd import bernoulli_kl, response_losses
from mhyolo.train.objective import ObjectiveConfig
from mhyolo.train.trainer import Trainer


# ----------------------------------------------------------------------------- hand values
def test_mask_on_hand_made_boxes_and_anchors() -> None:
    """A 4x4 grid of 10-px cells, one 20x20 anchor, the box (10, 10, 20, 20). The anchor at cell (1, 1)
    is (5, 5, 25, 25): IoU 100/400 = 0.25, the box's best. At a side neighbour, e.g. (25, 15) ->
    (15, 5, 35, 25): 50/450 = 0.111; at a corner neighbour 25/475 = 0.053. ψ=0.5 (0.125) -> the cell
    alone; ψ=0.4 (0.1) -> the cell and its four side neighbours."""
    anchors = torch.tensor([[20.0, 20.0]])
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 1] = True
    assert torch.equal(imitation_mask(box, anchors, 10.0, (4, 4), psi=0.5), expected)
    expected[0, 1] = expected[2, 1] = expected[1, 0] = expected[1, 2] = True
    assert torch.equal(imitation_mask(box, anchors, 10.0, (4, 4), psi=0.4), expected)
    # two boxes: the union; no box: nothing
    second = torch.tensor([[30.0, 30.0, 40.0, 40.0]])  # best at cell (3, 3), alone at ψ=0.5
    union = imitation_mask(torch.cat((box, second)), anchors, 10.0, (4, 4), psi=0.5)
    assert union.sum() == 2 and union[1, 1] and union[3, 3]
    assert not imitation_mask(torch.zeros(0, 4), anchors, 10.0, (4, 4)).any()


def test_each_box_is_judged_against_its_own_best_anchor() -> None:
    """A small box and a large box: the large box's best IoU is low in absolute terms, but ψ is relative
    to each box's own maximum, so it still marks its cells."""
    anchors = torch.tensor([[10.0, 10.0]])
    big = torch.tensor([[0.0, 0.0, 40.0, 40.0]])  # every cell overlaps it with IoU 100/1600
    mask = imitation_mask(big, anchors, 10.0, (4, 4), psi=0.5)
    assert mask.all()


def test_batch_masks_read_normalised_targets() -> None:
    targets = torch.tensor([[1.0, 0.0, 0.375, 0.375, 0.25, 0.25]])  # image 1: the box (10, 10, 20, 20) of 40x40
    masks = batch_masks(targets, 2, (40, 40), torch.tensor([[20.0, 20.0]]), 10.0, (4, 4), 0.5)
    assert masks.shape == (2, 4, 4) and not masks[0].any() and masks[1].sum() == 1 and masks[1, 1, 1]


def test_imitation_loss_is_the_formula() -> None:
    adapted = torch.zeros(1, 2, 2, 2)
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[0, :, 0, 0] = torch.tensor([1.0, 2.0])  # squared error 5 at cell (0, 0)
    teacher[0, :, 1, 1] = torch.tensor([3.0, 0.0])  # 9 at (1, 1), outside the mask
    mask = torch.tensor([[[True, True], [False, False]]])
    assert imitation_loss(adapted, teacher, mask).item() == pytest.approx(5 / (2 * 2))
    none = imitation_loss(adapted.requires_grad_(), teacher, torch.zeros_like(mask))
    assert none.item() == 0.0 and none.requires_grad  # graph kept when nothing is masked


def test_bernoulli_kl_on_hand_values() -> None:
    s, t = torch.tensor([0.0]), torch.tensor([math.log(3.0)])  # σ = 0.5 and 0.75
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert bernoulli_kl(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert bernoulli_kl(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_response_losses_on_hand_values() -> None:
    teacher = torch.zeros(1, 1, 1, 2, 6)  # two cells, nc=1
    teacher[0, 0, 0, 0, 4] = math.log(3.0)  # objectness 0.75 at cell 0, 0.5 at cell 1
    student = teacher.clone()
    cls, box = response_losses(student, teacher, nc=1)
    assert cls.item() == pytest.approx(0.0, abs=1e-7) and box.item() == pytest.approx(0.0, abs=1e-7)
    student[0, 0, 0, 1, 4] = math.log(3.0)  # cell 1: student 0.75 against 0.5
    student[0, 0, 0, 0, 0] = math.log(3.0)  # cell 0: x coordinate 0.75 against 0.5
    cls, box = response_losses(student, teacher, nc=1)
    assert cls.item() == pytest.approx((0.25 ** 2) / 2)  # mean over the two cells
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert box.item() == pytest.approx(kl * 0.75 / (0.75 + 0.5), rel=1e-5)  # weighted by the teacher's objectness


# ---------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("distill") / "data", per_type_train=2, per_type_val=1)


@pytest.fixture(scope="module")
def ball_teacher(official_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-class typed model: the same anchors and layout as the student, for response KD."""
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.safetensors",
                           sports_ball_model(official_weights, "yolov5n-typehead-lite"))


def _config(data: Path, official_weights: Path, teacher: Path | str, terms: dict, epochs: int = 1) -> TrainConfig:
    return TrainConfig(data=str(data), weights=str(official_weights), model="yolov5n-typehead-lite", epochs=epochs,
                       imgsz=128, batch=2, workers=0, close_mosaic=0, teacher=str(teacher),
                       optim=OptimConfig(warmup_epochs=0.0, nominal_batch=2), augment=AugmentConfig(mosaic=0.0),
                       objective=ObjectiveConfig(type_weight=0.05, terms=terms))


def test_one_step_moves_the_student_and_adapter_never_the_teacher(data: Path, official_weights: Path,
                                                                  tmp_path: Path) -> None:
    config = _config(data, official_weights, official_weights, {"imitation": {"weight": 1.0}})
    trainer = Trainer(config, tmp_path / "run", progress=False)
    trainer._setup()
    teacher_before = {k: v.clone() for k, v in trainer.teacher.model.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    term = trainer.objective.term("imitation")
    adapter_before = term.adapters[0].weight.detach().clone()
    batch = next(iter(trainer.loader))
    images = batch.images.float() / 255
    trainer.module.train()
    assert not trainer.teacher.model.training  # .train() on what trains never reaches the teacher
    # the imitation term alone sends gradient into the student
    raw, features = trainer.model.forward_with_features(images, trainer.objective.feature_rows)
    from mhyolo.train.terms import Step

    step = Step(outputs=raw, targets=batch.targets, features=features, images=images, teacher=trainer.teacher,
                teacher_rows=trainer.objective.teacher_rows)
    term(step).loss.backward()
    grad = torch.sqrt(sum(p.grad.pow(2).sum() for p in trainer.model.parameters() if p.grad is not None))
    assert grad > 0
    trainer.optimizer.zero_grad(set_to_none=True)
    loss, parts = trainer.module(images, batch.targets)
    assert parts["imitation"] > 0
    loss.backward()
    trainer._optimizer_step()
    assert all(torch.equal(v, trainer.teacher.model.state_dict()[k]) for k, v in teacher_before.items())
    assert not all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in student_before.items())
    assert not torch.equal(term.adapters[0].weight, adapter_before)
    assert all(not p.requires_grad for p in trainer.teacher.model.parameters())


def test_a_distillation_run_reports_each_term_and_best_holds_the_student_alone(
        data: Path, official_weights: Path, ball_teacher: Path, tmp_path: Path) -> None:
    config = _config(data, official_weights, ball_teacher, {"imitation": {}, "response_kd": {}}, epochs=2)
    straight = Trainer(config, tmp_path / "straight", progress=False).run()
    with (tmp_path / "straight" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for column in ("train/imitation", "train/kd_cls", "train/kd_box"):
        assert float(rows[0][column]) > 0, column
    best = load_checkpoint(straight.best)
    assert not best.extra and not any("adapter" in k for k in best.model.state_dict())
    train_until_killed(config, tmp_path / "killed")
    resumed = Trainer(config, tmp_path / "killed", progress=False, resume=True).run()
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert any(k.startswith("terms/") and "adapters" in k for k in a.extra)
    for key, value in a.extra.items():
        assert torch.allclose(value, b.extra[key], atol=1e-6), key


def test_a_teacher_that_cannot_teach_is_refused_before_training(data: Path, official_weights: Path,
                                                                 tmp_path: Path) -> None:
    def setup(teacher, terms) -> None:
        Trainer(_config(data, official_weights, teacher, terms), tmp_path / "run", progress=False)._setup()

    with pytest.raises(ConfigError, match="teacher: weights file not found"):
        setup(tmp_path / "missing.safetensors", {"imitation": {}})
    with pytest.raises(ConfigError, match="detects 80 classes, the student 1"):  # the COCO model, anchor by anchor
        setup(official_weights, {"response_kd": {}})
    with pytest.raises(ConfigError, match=r"\[9\] are not detection inputs"):
        setup(official_weights, {"imitation": {"rows": [9]}})
    with pytest.raises(ConfigError, match="no loss term learns from it"):
        setup(official_weights, {})
    shifted = sports_ball_model(official_weights)
    shifted.detect.anchors.mul_(1.5)
    with pytest.raises(ConfigError, match="anchors .* differ"):
        setup(save_checkpoint(tmp_path / "shifted.safetensors", shifted), {"response_kd": {}})


@pytest.mark.slow
def test_two_process_ddp_with_imitation(data: Path, tmp_path: Path) -> None:
    worker = Path(__file__).parent / "helpers" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29521",
               str(worker), str(data), str(tmp_path), "imitation", "yolov5n.pt"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(rank["row"]["train/imitation"] > 0 for rank in ranks)  # not silently zero on either rank
    assert ranks[0]["digest"] == ranks[1]["digest"]  # student and adapters identical
