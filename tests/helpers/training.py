"""Stopping a training run at the end of its first epoch, as a kill would, to test resuming."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhyolo.train.config import TrainConfig
from mhyolo.train.trainer import Trainer


class Killed(Exception):
    """What `KillAfterFirstEpoch` raises; nothing in the trainer catches it."""


class KillAfterFirstEpoch:
    """A trainer hook that stops the run once the first epoch's checkpoint is written."""

    def after_epoch(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        raise Killed()


def train_until_killed(config: TrainConfig, run_dir: Path) -> None:
    """Train `config` in `run_dir` and kill it after its first epoch: its last checkpoint is that epoch's."""
    with pytest.raises(Killed):
        Trainer(config, run_dir, hooks=[KillAfterFirstEpoch()], progress=False).run()
