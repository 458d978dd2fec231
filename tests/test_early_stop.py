"""Early stopping: decided after validations only, on the process that validated, the same for every rank."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.fake_validation import validation_scoring
from helpers.tiny_data import tiny_ball_dataset
from mhyolo.data.augment import AugmentConfig
from mhyolo.model.weights import load_checkpoint
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.early_stop import EarlyStopping


def _run(fitnesses: list[float], patience: int, val_every: int = 1) -> tuple[int, int]:
    """Epochs run and the best epoch, feeding `fitnesses` to validated epochs as the trainer does."""
    stopper, best, best_epoch = EarlyStopping(patience), float("-inf"), -1
    for epoch, score in enumerate(fitnesses):
        validated = (epoch + 1) % val_every == 0 or epoch == len(fitnesses) - 1
        improved = None if not validated else score > best
        if improved:
            best, best_epoch = score, epoch
        if stopper.update(epoch, improved):
            return epoch + 1, best_epoch
    return len(fitnesses), best_epoch


def test_falling_fitness_stops_after_patience_with_best_from_the_first_epoch():
    assert _run([0.5, 0.4, 0.3, 0.2, 0.1], patience=2) == (3, 0)


def test_a_late_improvement_resets_the_count():
    assert _run([0.5, 0.4, 0.6, 0.5, 0.4, 0.3], patience=2) == (5, 2)


def test_no_patience_never_stops():
    assert _run([0.5, 0.4, 0.3, 0.2], patience=0) == (4, 0)


def test_epochs_without_validation_never_stop_a_run():
    stopper = EarlyStopping(patience=1)
    assert not stopper.update(0, None) and not stopper.update(1, None) and not stopper.update(2, None)
    # val_every 2: epochs 1, 3, 5 validated; fitness falls after the first validation
    assert _run([0.0, 0.5, 0.0, 0.4, 0.0, 0.3], patience=2, val_every=2) == (4, 1)


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("tiny"))


def _train(data, run: Path, monkeypatch, weights: Path, patience: int, val_every: int):
    """The trainer itself, 5 epochs at 64 px, with validation replaced by fitness 0.5, 0.4, 0.3, ..."""
    import mhyolo.train.trainer as trainer_module

    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])

    def fake_validate(*args, **kwargs):
        return validation_scoring(next(scores))

    monkeypatch.setattr(trainer_module, "validate", fake_validate)
    monkeypatch.setattr(trainer_module, "fitness", lambda row: row["map50"])
    plain = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, fliplr=0, mosaic=0)
    config = TrainConfig(data=str(data), weights=str(weights), epochs=5, imgsz=64, batch=4, workers=0,
                         close_mosaic=0, patience=patience, val_every=val_every, augment=plain,
                         optim=OptimConfig(warmup_epochs=0.0, nominal_batch=4))
    return trainer_module.Trainer(config, run, progress=False).run()


def test_trainer_stops_on_validated_fitness_and_keeps_the_first_best(data, tmp_path, monkeypatch, official_weights):
    summary = _train(data, tmp_path / "run", monkeypatch, official_weights, patience=2, val_every=1)
    assert summary.epochs_run == 3 and summary.best_fitness == 0.5
    assert load_checkpoint(summary.best).metadata["epoch"] == 0  # `best` holds the first epoch's weights
    assert load_checkpoint(summary.last).metadata["epoch"] == 2
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].split(",")[0] == "1"


def test_trainer_with_val_every_2_validates_before_it_can_stop(data, tmp_path, monkeypatch, official_weights):
    """Patience 1, validation every 2nd epoch: the first epoch (not validated) must not end the run."""
    summary = _train(data, tmp_path / "run", monkeypatch, official_weights, patience=1, val_every=2)
    assert summary.epochs_run == 4 and summary.best_fitness == 0.5
    rows = [r.split(",") for r in (tmp_path / "run" / "results.csv").read_text().splitlines()]
    header = rows[0]
    validated = [r[0] for r in rows[1:] if r[header.index("metrics/mAP50")]]
    assert validated == ["2", "4"]
