"""Shared fixtures: where the real data and weights are, and small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tests run two at a time on two cores


@pytest.fixture(scope="session")
def shared() -> Path:
    from mhyolo.paths import shared_dir

    path = shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set MHYOLO_SHARED to point at it)")
    return path


@pytest.fixture(scope="session")
def official_weights(shared: Path) -> Path:
    path = shared / "weights" / "yolov5n.pt"
    if not path.is_file():
        pytest.skip(f"official weights {path} are absent")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests from reading or filling the user's weights cache."""
    monkeypatch.setenv("MHYOLO_HOME", str(tmp_path_factory.getbasetemp() / "mhyolo-home"))
