"""The pipeline's training stages come from one table: a registered stage is planned, started from the
stage it names, with what it fixes; stages that cannot start are refused or skipped as registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhyolo.errors import ConfigError
from mhyolo.pipeline.config import FINAL_CANDIDATES, PipelineConfig, StageConfig, stage_runs
from mhyolo.pipeline.stage_registry import TRAINING_STAGES, TrainingStage, register_stage
from mhyolo.pipeline.stages import stage_weights, training_plan


@pytest.fixture
def extra_stage():
    """A throwaway stage 'polish' that fine-tunes the head stage's model with the detector frozen."""
    stage = register_stage(TrainingStage("polish", starts_from="head", fixed=(("freeze", "detector"),
                                                                               ("epochs", 3))))
    yield stage
    del TRAINING_STAGES["polish"]


def test_a_registered_stage_is_planned_from_the_stage_it_starts_from(extra_stage, tmp_path: Path):
    config = PipelineConfig(recipe="r.yaml", base_dir=tmp_path)
    config.polish = StageConfig(hyp="hyp")  # its section of the pipeline file
    plan = training_plan(config, tmp_path / "run")
    assert list(plan) == ["detector", "head", "joint", "polish"]  # registration order
    polish = plan["polish"]
    assert polish.weights == str(stage_weights(tmp_path / "run", "head"))
    assert (polish.freeze, polish.epochs) == ("detector", 3)
    config.head.enabled = False  # the stage it starts from does not run: nor does it
    assert not stage_runs(config, "polish") and "polish" not in training_plan(config, tmp_path / "run")


def test_the_shipped_table_plans_what_each_stage_starts_from(tmp_path: Path):
    config = PipelineConfig(recipe="r.yaml", base_dir=tmp_path)
    config.multihead.enabled = config.baseline.enabled = config.image_head.enabled = True
    run = tmp_path / "run"
    plan = training_plan(config, run)
    assert list(plan) == ["detector", "image_head", "head", "joint", "multihead", "baseline"]
    assert plan["head"].weights == plan["image_head"].weights == str(stage_weights(run, "detector"))
    assert plan["joint"].weights == str(stage_weights(run, "head"))
    assert (plan["head"].freeze, plan["joint"].freeze, plan["baseline"].single_class) == ("detector", None, False)
    assert FINAL_CANDIDATES == ("detector", "head", "joint", "multihead", "distill")


def test_registering_twice_or_from_an_unknown_stage_is_refused():
    with pytest.raises(ConfigError, match="'head' is registered already"):
        register_stage(TrainingStage("head"))
    with pytest.raises(ConfigError, match="starts from 'nowhere'"):
        register_stage(TrainingStage("orphan", starts_from="nowhere"))
    assert "orphan" not in TRAINING_STAGES
