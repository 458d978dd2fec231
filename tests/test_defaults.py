"""Training settings by shipped name or by file: the user's own file wins, a typo names both places."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhyolo.config import load_config
from mhyolo.defaults import shipped_training_files, training_file
from mhyolo.errors import ConfigError
from mhyolo.pipeline.config import load_pipeline_config
from mhyolo.pipeline.stages import training_plan
from mhyolo.train.config import TrainConfig


def test_every_stage_default_ships_and_loads() -> None:
    shipped = shipped_training_files()
    assert {"hyp", "head", "joint", "multihead"} <= set(shipped)
    for name, path in shipped.items():
        assert training_file(name) == path == training_file(f"{name}.yaml")
        load_config(TrainConfig, path)  # every key is a real setting


def test_a_file_beside_the_pipeline_wins_over_the_shipped_name(tmp_path: Path) -> None:
    (tmp_path / "multihead.yaml").write_text("epochs: 3\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("classes: [ball]\nsources: []\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"recipe: {recipe}\ndetector: {{enabled: false}}\nhead: {{enabled: false}}\n"
                        "joint: {enabled: false}\nmultihead: {enabled: true, hyp: multihead.yaml}\n")
    plan = training_plan(load_pipeline_config(pipeline), tmp_path / "run")
    assert list(plan) == ["multihead"] and plan["multihead"].epochs == 3
    pipeline.write_text(pipeline.read_text().replace("hyp: multihead.yaml", "hyp: multihead"))
    (tmp_path / "multihead.yaml").unlink()
    shipped = training_plan(load_pipeline_config(pipeline), tmp_path / "run")["multihead"]
    assert shipped.epochs == load_config(TrainConfig, shipped_training_files()["multihead"]).epochs != 3


def test_an_unknown_name_says_where_it_looked_and_what_ships(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file .*mutlihead.*not a shipped name \(.*multihead"):
        training_file("mutlihead", (tmp_path,))
