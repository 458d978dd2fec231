"""The `coco_ball` term: KL to the untouched COCO YOLOv5n's "sports ball" score on the training images.

Hand values of the loss; the student's score read as inference reads it; zero for a student that
scores as COCO does, and not for the `class_init: 32` start (its fold overstates COCO); gradient into
the student; a reference model that never changes, never trains and never reaches a checkpoint; only
levels of a shared stride compared; bad settings refused."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F
from helpers.models import SPORTS_BALL, sports_ball_model
from helpers.tiny_data import tiny_ball_dataset

from mhyolo.data.augment import AugmentConfig
from mhyolo.errors import ConfigError
from mhyolo.model.weights import load_checkpoint, load_model
from mhyolo.model.yolo import YoloModel, load_model_config
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.distill.coco_ball import bernoulli_kl_to, coco_ball_loss, reference_score, student_log_score
from mhyolo.train.loss import LossConfig
from mhyolo.train.objective import ObjectiveConfig, TrainingObjective
from mhyolo.train.state import build_training_model
from mhyolo.train.terms import Step
from mhyolo.train.trainer import Trainer

SIZE = 128


# ----------------------------------------------------------------------------- hand values
def test_kl_is_bce_less_the_targets_entropy_and_zero_at_the_target() -> None:
    target = torch.tensor([0.0, 0.25, 0.6, 1.0])
    p = torch.tensor([0.1, 0.5, 0.6, 0.9])
    kl = bernoulli_kl_to(target, p.log(), (1 - p).log())
    entropy = -(torch.special.xlogy(target, target) + torch.special.xlogy(1 - target, 1 - target))
    bce = F.binary_cross_entropy(p, target, reduction="none")
    assert torch.allclose(kl, bce - entropy, atol=1e-6)
    assert kl[1].item() == pytest.approx(0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5), rel=1e-5)
    assert kl[2].item() == pytest.approx(0.0, abs=1e-7) and (kl[[0, 1, 3]] > 0).all()


def test_the_loss_is_a_mean_over_cells_weighted_by_cocos_score() -> None:
    """One level, two cells: COCO 0.5 at cell 0 (obj 0, class logit +inf), 0 at cell 1; the student
    0.25 at both (obj logit log 1/3, class column +inf)."""
    reference = torch.full((1, 1, 1, 2, 85), -60.0)
    reference[..., 5 + SPORTS_BALL] = 60.0
    reference[0, 0, 0, 0, 4] = 0.0
    student = torch.zeros(1, 1, 1, 2, 6)
    student[..., 4], student[..., 5] = math.log(1 / 3), 60.0
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl1 = -math.log(0.75)
    for focus in (0.0, 10.0):
        value = coco_ball_loss([student], [reference], [(0, 0)], SPORTS_BALL, class_live=False, focus=focus)
        assert value.item() == pytest.approx(((1 + focus * 0.5) * kl0 + kl1) / 2, rel=1e-5)


def test_the_students_score_is_what_inference_ranks() -> None:
    """exp(log p) is obj x best class of the decoded rows (`suppress` scores a row by them), at nc=1 and 3."""
    torch.manual_seed(0)
    for nc in (1, 3):
        model = YoloModel("yolov5n", nc=nc, names=[str(i) for i in range(nc)]).eval()
        raw = [torch.randn(2, 3, 4, 4, 5 + nc) * 3 for _ in range(3)]
        rows = model.detect.inference(raw)
        expected = rows[..., 4] * rows[..., 5:].max(dim=-1).values
        log_p, log_not_p = zip(*(student_log_score(r, class_live=nc > 1) for r in raw))
        got = torch.cat([lp.reshape(2, -1) for lp in log_p], 1).exp()
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
        not_p = torch.cat([ln.reshape(2, -1) for ln in log_not_p], 1).exp()
        assert torch.allclose(not_p, 1 - expected, atol=1e-6)


def test_the_class_column_learns_from_the_term_only_where_it_is_live() -> None:
    """At nc=1 the class column has no loss of its own: the term must not move it (it could lower the
    score of a labelled ball COCO misses where the detection loss cannot see); at nc>1 it is live."""
    reference = [torch.randn(1, 3, 2, 2, 85)]
    for nc, live in ((1, False), (3, True)):
        raw = torch.randn(1, 3, 2, 2, 5 + nc, requires_grad=True)
        coco_ball_loss([raw], reference, [(0, 0)], SPORTS_BALL, class_live=live, focus=10.0).backward()
        assert raw.grad[..., 4].abs().sum() > 0
        assert (raw.grad[..., 5:].abs().sum() > 0) == live
        assert raw.grad[..., :4].abs().sum() == 0  # boxes are not the term's business


# ------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def images(shared: Path) -> torch.Tensor:
    """Four real ball photos of seed_balls (one of each type, one more), stretched to SIZE."""
    folder = shared / "data" / "seed_balls" / "images"
    files = [sorted(folder.glob(f"{kind}*"))[i] for kind, i in (("basket", 0), ("foot", 0), ("tennis", 0),
                                                                   ("tennis", 5))]
    arrays = [cv2.resize(cv2.imread(str(f))[:, :, ::-1], (SIZE, SIZE)) for f in files]
    return torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]).float() / 255


def _objective(student: YoloModel, **settings) -> TrainingObjective:
    return TrainingObjective(student, LossConfig(), SIZE, ObjectiveConfig(terms={"coco_ball": settings}))


def _value(objective: TrainingObjective, student: YoloModel, images: torch.Tensor) -> torch.Tensor:
    step = Step(outputs=student(images), targets=torch.zeros(0, 6), images=images)
    return objective.term("coco_ball").compute(step).logged["coco_ball"]


def test_zero_for_a_student_that_scores_as_coco_and_gradient_once_it_differs(
        official_weights: Path, images: torch.Tensor) -> None:
    """A one-class student whose Detect keeps COCO's objectness and class-32 rows as they are scores
    σ(obj) · σ(cls32) exactly: the term is at its minimum, 0. Moved off it, the term is positive and
    sends gradient through the head into the backbone."""
    student = sports_ball_model(official_weights, "yolov5n-typehead-lite").eval()
    objective = _objective(student, weights=str(official_weights))
    value = _value(objective, student, images)
    assert abs(value.item()) < 1e-6
    with torch.no_grad():
        student.detect.m[0].bias.view(3, -1)[:, 4] += 1.0  # P3 objectness up by one logit
    raw = student(images)
    result = objective.term("coco_ball").compute(Step(outputs=raw, targets=torch.zeros(0, 6), images=images))
    assert result.logged["coco_ball"] > 1e-5  # ten times the tolerance of "zero" above
    result.loss.backward()
    assert student.detect.m[0].weight.grad.abs().sum() > 0
    assert student.model[0].conv.weight.grad.abs().sum() > 0  # through the features too


def test_the_class_init_start_folds_coco_ball_into_objectness_and_is_not_at_the_minimum(
        official_weights: Path, images: torch.Tensor) -> None:
    """`class_init: 32` at nc=1 gives the student's objectness logit COCO's obj + class-32 logits (to
    float rounding): σ(a + b) ≥ σ(a) σ(b), so where COCO is confident the start overstates it and the
    term is not at its minimum there; where COCO says "no ball" the two agree."""
    student, _ = build_training_model(str(official_weights), "yolov5n-typehead-lite", ["ball"], seed_class=32)
    student.eval()
    coco = load_model(official_weights).eval()
    with torch.no_grad():
        raw, reference = student(images)["detection"], coco(images)["detection"]
    for s, r in zip(raw, reference):
        assert torch.allclose(s[..., 4], r[..., 4] + r[..., 5 + SPORTS_BALL], atol=1e-4)
        assert (torch.sigmoid(s[..., 4]) >= reference_score(r, SPORTS_BALL) - 1e-6).all()
    value = _value(_objective(student, weights=str(official_weights)), student, images)
    assert value.item() > 1e-6


def test_only_levels_with_a_shared_stride_are_compared(official_weights: Path, images: torch.Tensor) -> None:
    """A student with an extra stride-4 level (P2): its levels 1-3 pair with COCO's 0-2, level 0 gets
    no gradient; `levels: [8]` keeps P3 alone; shifted anchors at a shared stride are refused."""
    config = load_model_config("yolov5n")
    config["anchors"] = [[5, 6, 8, 14, 15, 11], *config["anchors"]]
    config["head"][-1] = [[2, 17, 20, 23], 1, "Detect", ["nc", "anchors"]]
    student = YoloModel(config, nc=1, names=["ball"])
    assert student.detect.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    term = _objective(student, weights=str(official_weights)).term("coco_ball")
    assert term.pairs == [(1, 0), (2, 1), (3, 2)]
    result = term.compute(Step(outputs=student(images), targets=torch.zeros(0, 6), images=images))
    result.loss.backward()
    assert student.detect.m[0].weight.grad is None or student.detect.m[0].weight.grad.abs().sum() == 0
    assert all(student.detect.m[i].weight.grad.abs().sum() > 0 for i in (1, 2, 3))
    assert _objective(student, weights=str(official_weights), levels=[8]).term("coco_ball").pairs == [(1, 0)]
    with torch.no_grad():
        student.detect.anchors[2].mul_(1.5)
    with pytest.raises(ConfigError, match="stride 16: anchors .* differ"):
        _objective(student, weights=str(official_weights))


def test_bad_settings_are_refused(official_weights: Path, tmp_path: Path) -> None:
    student = YoloModel("yolov5n", nc=1, names=["ball"])
    weights = str(official_weights)
    with pytest.raises(ConfigError, match=r"objective.terms.coco_ball: unknown key\(s\) wieght"):
        _objective(student, wieght=1.0)
    with pytest.raises(ConfigError, match=r"levels: stride\(s\) \[4\] are not levels of both"):
        _objective(student, weights=weights, levels=[4])
    with pytest.raises(ConfigError, match="levels: 'all' or a list of strides"):
        _objective(student, weights=weights, levels="p3")
    with pytest.raises(ConfigError, match="ball_class: 80 is not a class"):
        _objective(student, weights=weights, ball_class=80)
    with pytest.raises(ConfigError, match="focus must be >= 0"):
        _objective(student, weights=weights, focus=-1.0)
    with pytest.raises(ConfigError, match=r"coco_ball.weights: weights file not found: .*missing\.pt"):
        _objective(student, weights=str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("cocokeep") / "data", per_type_train=2, per_type_val=1)


def _config(data: Path, official_weights: Path, coco_ball: dict) -> TrainConfig:
    return TrainConfig(data=str(data), weights=str(official_weights), model="yolov5n-typehead-lite", epochs=1,
                       imgsz=SIZE, batch=2, workers=0, close_mosaic=0, class_init=32,
                       optim=OptimConfig(warmup_epochs=0.0, nominal_batch=2), augment=AugmentConfig(mosaic=0.0),
                       objective=ObjectiveConfig(type_weight=0.05, terms={"coco_ball": coco_ball}))


def test_the_reference_never_trains_never_changes_and_stays_in_eval(data: Path, official_weights: Path,
                                                                     tmp_path: Path) -> None:
    trainer = Trainer(_config(data, official_weights, {"weight": 5.0}), tmp_path / "run", progress=False)
    trainer._setup()  # `weights` left at its default, yolov5n.pt, found in the shared weights folder
    reference = trainer.objective.term("coco_ball").reference.model
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    assert any(k.endswith("running_mean") for k in before) and any(k.endswith("num_batches_tracked") for k in before)
    student_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in reference.parameters())
    assert all(not p.requires_grad for p in reference.parameters())
    trainer.module.train()
    assert trainer.objective.training and not reference.training  # .train() on what trains never reaches it
    batch = next(iter(trainer.loader))
    loss, parts = trainer.module(batch.images.float() / 255, batch.targets)
    assert parts["coco_ball"] > 0
    loss.backward()
    trainer._optimizer_step()
    after = reference.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())  # weights and BatchNorm buffers
    assert not reference.training
    assert not all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in student_before.items())


def test_a_run_reports_the_term_and_its_checkpoints_hold_no_reference_tensor(
        data: Path, official_weights: Path, tmp_path: Path) -> None:
    config = _config(data, official_weights, {"weight": 1.0, "weights": str(official_weights)})
    trainer = Trainer(config, tmp_path / "run", progress=False)
    summary = trainer.run()
    with (tmp_path / "run" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["train/coco_ball"]) > 0
    student_keys = set(trainer.model.state_dict())
    best, last = load_checkpoint(summary.best), load_checkpoint(summary.last)
    assert set(best.model.state_dict()) == student_keys and not best.extra
    assert set(last.model.state_dict()) == student_keys
    # the terms' tensors are the detection loss's anchors alone: nothing of the reference model
    assert [k for k in last.extra if k.startswith("terms/")] == ["terms/terms.0.loss.anchors"]
    assert trainer.objective.term_names[0] == "detection"
    assert {k[len("train/"):] for k in last.extra if k.startswith("train/")} == student_keys
    assert all(k.startswith(("train/", "optim/", "terms/")) for k in last.extra)
