"""What the training loop does between batches: how many optimizer steps gradient accumulation
makes per epoch, the warm-up the loop applies, and how DDP splits the batches between ranks.

Validation is replaced by a constant score (what it measures is not under test here), and the
model starts from scratch, so each run is a few seconds at 64 px."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.fake_validation import validation_scoring
from helpers.tiny_data import tiny_ball_dataset
from mhyolo.data.augment import AugmentConfig
from mhyolo.model.weights import load_checkpoint
from mhyolo.train.config import OptimConfig, TrainConfig

PLAIN = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, fliplr=0, mosaic=0)


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("tiny"))  # 12 train images, 6 val


def _config(data: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), weights=None, model="yolov5n", epochs=2, imgsz=64, batch=2, workers=0,
                close_mosaic=0, augment=PLAIN, optim=OptimConfig(warmup_epochs=0.0, nominal_batch=8))
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture
def quick_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    import mhyolo.train.trainer as trainer_module

    def fake_validate(*args, **kwargs):
        return validation_scoring(0.5)

    monkeypatch.setattr(trainer_module, "validate", fake_validate)


class Record:
    """After each epoch: the EMA's update count (one per optimizer step) and the groups' lr / momentum."""

    def __init__(self) -> None:
        self.updates: list[int] = []
        self.groups: list[dict[str, tuple[float, float]]] = []

    def after_epoch(self, trainer, epoch: int, row: dict[str, float]) -> None:
        self.updates.append(trainer.ema.updates)
        self.groups.append({g["kind"]: (g["lr"], g["momentum"]) for g in trainer.optimizer.param_groups})


@pytest.mark.parametrize(("nominal_batch", "accumulate", "updates"), [
    (8, 4, [2, 4]),  # 6 batches of 2 a epoch, a step every 4: after batch 4, then the epoch's last 2 batches
    (2, 1, [6, 12]),  # no accumulation: a step after every batch
])
def test_accumulation_steps_once_per_accumulate_batches_and_at_the_end_of_each_epoch(
        data: Path, tmp_path: Path, quick_validation, nominal_batch: int, accumulate: int,
        updates: list[int]) -> None:
    from mhyolo.train.trainer import Trainer

    record = Record()
    config = _config(data, optim=OptimConfig(warmup_epochs=0.0, nominal_batch=nominal_batch))
    trainer = Trainer(config, tmp_path / "run", hooks=[record], progress=False)
    summary = trainer.run()
    assert len(trainer.loader) == 6 and trainer.accumulate == accumulate
    assert record.updates == updates
    assert load_checkpoint(summary.last).metadata["ema_updates"] == updates[-1]
    assert (trainer.ema.decay, trainer.ema.tau) == (0.9999, 2000.0)


def test_the_loop_warms_up_over_at_least_100_iterations(data: Path, tmp_path: Path, quick_validation) -> None:
    """warmup_epochs 1 of 6 batches would be 6 iterations; YOLOv5's floor makes it 100, so after
    the 6 iterations of the first epoch (last index 5) the warm-up is 5 % done."""
    from mhyolo.train.trainer import Trainer

    record = Record()
    config = _config(data, optim=OptimConfig(warmup_epochs=1.0, nominal_batch=8))
    Trainer(config, tmp_path / "run", hooks=[record], progress=False).run()
    first, second = record.groups
    # epoch 0 of 2: target 0.01; iteration 5 of 100: weights 0.05 x 0.01, biases 0.1 - 0.05 x 0.09,
    # momentum 0.8 + 0.05 x 0.137
    assert first["weight"] == (pytest.approx(0.0005), pytest.approx(0.80685))
    assert first["norm"] == (pytest.approx(0.0005), pytest.approx(0.80685))
    assert first["bias"] == (pytest.approx(0.0955), pytest.approx(0.80685))
    # epoch 1 of 2: target 0.01 x (1 - 0.99 x (1 - cos(pi/2)) / 2) = 0.00505; iteration 11 of 100
    assert second["weight"] == (pytest.approx(0.11 * 0.00505), pytest.approx(0.8 + 0.11 * 0.137))
    assert second["bias"] == (pytest.approx(0.1 - 0.11 * (0.1 - 0.00505)), pytest.approx(0.8 + 0.11 * 0.137))


def _rank_trainer(monkeypatch: pytest.MonkeyPatch, config: TrainConfig, run: Path, rank: int, world_size: int):
    """A trainer set up as rank `rank` of `world_size` would be under torchrun, without a process group
    (the DDP wrapper, which needs one, is left out: the split of the data does not depend on it)."""
    import mhyolo.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module._Distributed, "from_environment",
                        classmethod(lambda cls, device: cls(rank=rank, world_size=world_size)))
    monkeypatch.setattr(trainer_module, "DistributedDataParallel", lambda module: module)
    trainer = trainer_module.Trainer(config, run, progress=False)
    trainer._setup()
    return trainer


def test_under_ddp_each_rank_gets_half_the_batches_and_together_they_cover_the_epoch(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(data, batch=2, optim=OptimConfig(warmup_epochs=0.0, nominal_batch=8, weight_decay=0.0005))
    alone = _rank_trainer(monkeypatch, config, tmp_path / "alone", rank=0, world_size=1)
    ranks = [_rank_trainer(monkeypatch, config, tmp_path / f"rank{r}", rank=r, world_size=2) for r in (0, 1)]
    assert len(alone.loader) == 6 and [len(t.loader) for t in ranks] == [3, 3]
    assert ranks[1].val_set is None  # only rank 0 validates
    for epoch in (0, 1):
        seen = []
        for trainer in ranks:
            trainer.sampler.set_epoch(epoch)
            seen.append(list(trainer.sampler))
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(12))
    # a step still sees the nominal 8 images: 2 a batch x 2 ranks x 2 accumulated batches
    assert alone.accumulate == 4 and [t.accumulate for t in ranks] == [2, 2]
    # and the weight decay, scaled by the images a step sees (8 of the nominal 8), is the same as alone
    for trainer in (alone, *ranks):
        decayed = [g["weight_decay"] for g in trainer.optimizer.param_groups if g["kind"] == "weight"]
        assert decayed == [pytest.approx(0.0005)], trainer.run_dir.name
