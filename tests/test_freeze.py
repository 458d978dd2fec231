"""Phase 2 freezing is real: after type-head training the detector is bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.tiny_data import tiny_ball_dataset
from mhyolo.errors import ConfigError
from mhyolo.model.weights import load_checkpoint, save_checkpoint
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.state import build_training_model
from mhyolo.train.trainer import Trainer

TYPEHEAD = "yolov5n-typehead"


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory, official_weights: Path) -> Path:
    """A one-class detector checkpoint (COCO weights transferred), as phase 1 would leave it."""
    torch.manual_seed(0)
    model, _ = build_training_model(str(official_weights), None, ["ball"])
    return save_checkpoint(tmp_path_factory.mktemp("det") / "best.safetensors", model)


def _phase2(data: Path, weights: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), weights=str(weights), model=TYPEHEAD, freeze="detector", epochs=2, imgsz=128,
                batch=4, workers=0, close_mosaic=1, optim=OptimConfig(optimizer="Adam", lr0=1e-3, warmup_epochs=0.0))
    base.update(overrides)
    return TrainConfig(**base)


def test_phase2_changes_only_the_type_head(data: Path, detector: Path, tmp_path: Path) -> None:
    start = load_checkpoint(detector).model.state_dict()
    summary = Trainer(_phase2(data, detector), tmp_path / "run", progress=False).run()
    last = load_checkpoint(summary.last)
    raw = {k[len("train/"):]: v for k, v in last.extra.items() if k.startswith("train/")}
    for weights in (last.model.state_dict(), raw):  # the EMA model and the raw model
        for key, value in start.items():
            assert torch.equal(weights[key], value), f"detector tensor {key} changed"
        head = [k for k in weights if k not in start]
        assert head and all(k.startswith("model.25.") for k in head)
    initial_head, _ = build_training_model(str(detector), TYPEHEAD, ["ball"])
    changed = [k for k in head if not torch.equal(raw[k], initial_head.state_dict()[k])]
    assert changed, "the type head did not train"
    assert last.model.type_names == ["basketball", "football", "tennis-ball"]


def test_freezing_needs_a_type_head(data: Path, detector: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="type head"):
        Trainer(_phase2(data, detector, model=None), tmp_path / "run", progress=False).run()


def test_joint_training_moves_the_detector_too(data: Path, detector: Path, tmp_path: Path) -> None:
    start = load_checkpoint(detector).model.state_dict()
    config = _phase2(data, detector, freeze=None, epochs=1, optim=OptimConfig(lr0=0.01, warmup_epochs=0.0))
    summary = Trainer(config, tmp_path / "run", progress=False).run()
    last = load_checkpoint(summary.last)
    raw = {k[len("train/"):]: v for k, v in last.extra.items() if k.startswith("train/")}
    assert not torch.equal(raw["model.0.conv.weight"], start["model.0.conv.weight"])
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    assert float(values[header.index("train/type")]) > 0 and float(values[header.index("train/box")]) > 0


def test_short_phase2_run_lifts_type_accuracy_well_above_chance(shared: Path, tmp_path: Path, detector: Path) -> None:
    """8 images per type, 6 epochs of the type head alone on the warm-started detector.

    Chance is 1/3 for three balanced types. The floor of 0.6 is measured on the images the
    head was trained on (about 11 matched boxes; measured: 0.91): it checks that targets
    reach the head through the detector's own assignment and that each kept detection
    reads its type from the right row. A head that learns nothing, or reads types from the
    wrong rows, stays near 1/3 (P(>= 0.6 by chance) < 5% for 11 boxes, and the run is
    seeded, so the outcome is fixed).
    """
    from mhyolo.data.augment import AugmentConfig
    from mhyolo.data.dataset import YoloDataset
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import validate
    from mhyolo.model.weights import load_model

    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=8, per_type_val=4)
    config = _phase2(data, detector, epochs=6, imgsz=192, batch=8, augment=AugmentConfig(mosaic=0.0),
                     optim=OptimConfig(optimizer="Adam", lr0=3e-3, warmup_epochs=0.0))
    summary = Trainer(config, tmp_path / "run", progress=False).run()
    model = load_model(summary.last)
    train = YoloDataset(load_data_spec(data), "train", 192)
    types = validate(model, train, ["basketball", "football", "tennis-ball"], progress=False).types
    assert types is not None and types.matched >= 8
    assert types.cls_accuracy >= 0.6, types.table()
