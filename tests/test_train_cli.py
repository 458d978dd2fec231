"""`mhyolo train` on a few real images at 64 px: a run folder is never trained over, `--resume`
continues where a killed run stopped, `--weights none` trains from scratch, `--types-as-classes`
detects the three ball types."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from helpers.tiny_data import TYPE_NAMES, tiny_ball_dataset
from helpers.training import KillAfterFirstEpoch, Killed
from mhyolo.cli import main
from mhyolo.model.weights import load_checkpoint

SETTINGS = """\
epochs: 2
imgsz: 64
batch: 4
workers: 0
close_mosaic: 0
optim: {warmup_epochs: 0.0, nominal_batch: 4}
augment: {hsv_h: 0.0, hsv_s: 0.0, hsv_v: 0.0, degrees: 0.0, translate: 0.0, scale: 0.0, fliplr: 0.0, mosaic: 0.0}
"""


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("tiny"), per_type_train=2, per_type_val=1)


@pytest.fixture(scope="module")
def hyp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hyp") / "fast.yaml"
    path.write_text(SETTINGS)
    return path


def _epochs(run: Path) -> list[str]:
    with (run / "results.csv").open(newline="") as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


def test_a_second_run_into_a_run_folder_is_refused_and_resume_adds_one_row(
        data: Path, hyp: Path, tmp_path: Path, official_weights: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import mhyolo.train.trainer as trainer_module

    class KilledAfterFirstEpoch(trainer_module.Trainer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.hooks.append(KillAfterFirstEpoch())

    run = tmp_path / "run"
    command = ["train", "--data", str(data), "--hyp", str(hyp), "--out", str(run), "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "Trainer", KilledAfterFirstEpoch)
        with pytest.raises(Killed):
            main(command)  # killed once the first of two epochs is checkpointed
    assert _epochs(run) == ["1"]
    last = run / "weights" / "last.safetensors"
    results, checkpoint = (run / "results.csv").read_bytes(), last.read_bytes()

    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume {run}" in err
    assert (run / "results.csv").read_bytes() == results and last.read_bytes() == checkpoint  # nothing touched

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert _epochs(run) == ["1", "2"]  # exactly the missing epoch's row
    assert (run / "results.csv").read_bytes().startswith(results)
    assert load_checkpoint(last).metadata["epoch"] == 1


def test_weights_none_trains_from_scratch(data: Path, hyp: Path, tmp_path: Path, official_weights: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hyp", str(hyp), "--weights", "none", "--epochs", "1",
                 "--out", str(run), "--quiet"]) == 0
    meta = load_checkpoint(run / "weights" / "last.safetensors").metadata
    assert meta["weights_source"] == "scratch"
    assert meta["train_config"]["weights"] is None
    assert meta["train_config"]["model"] == "yolov5n"  # the architecture comes from the settings, not weights


def test_types_as_classes_detects_the_three_types(data: Path, hyp: Path, tmp_path: Path,
                                                  official_weights: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hyp", str(hyp), "--types-as-classes", "--epochs", "1",
                 "--out", str(run), "--quiet"]) == 0
    best = load_checkpoint(run / "weights" / "best.safetensors")
    assert best.model.detect.nc == 3 and list(best.model.names) == TYPE_NAMES
    assert best.metadata["train_config"]["single_class"] is False
    # COCO weights: the box and objectness rows carry over, the class rows are new
    assert best.metadata["weights_source"].startswith("yolov5n.pt")
