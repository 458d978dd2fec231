"""The pipeline's training stages as a table: a new training stage is one `TrainingStage` registered
here plus its section in `PipelineConfig`; the plan, the final-model choice, the config checks and the
report's latency rows read the table instead of naming stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mhyolo.errors import ConfigError


@dataclass(frozen=True)
class TrainingStage:
    """A training stage of the pipeline: its section of the pipeline file (a `StageConfig` field of
    `PipelineConfig` of the same name), the stage whose best weights it starts from (None: the COCO
    weights, or the `weights` its settings name) and whether a pipeline file enabling it without that
    stage is refused (else the stage is skipped), what it fixes in its training settings, whether its
    model may become the run's final model, and whether the report times it."""

    name: str
    starts_from: str | None = None
    start_required: bool = True
    fixed: tuple[tuple[str, Any], ...] = ()
    final_candidate: bool = False
    timed: bool = True


TRAINING_STAGES: dict[str, TrainingStage] = {}


def register_stage(stage: TrainingStage) -> TrainingStage:
    """Add a training stage; the plan trains the registered stages in registration order."""
    if stage.name in TRAINING_STAGES:
        raise ConfigError(f"training stage {stage.name!r} is registered already")
    if stage.starts_from is not None and stage.starts_from not in TRAINING_STAGES:
        raise ConfigError(f"training stage {stage.name!r} starts from {stage.starts_from!r}, which is not "
                          "registered before it")
    TRAINING_STAGES[stage.name] = stage
    return stage


for _stage in (
        TrainingStage("detector", final_candidate=True),
        # the seed's per-image head on the same frozen detector, for comparison with the per-object head
        TrainingStage("image_head", starts_from="detector", fixed=(("freeze", "detector"),)),
        TrainingStage("head", starts_from="detector", fixed=(("freeze", "detector"),), final_candidate=True),
        TrainingStage("joint", starts_from="head", start_required=False, fixed=(("freeze", None),), final_candidate=True, timed=False),
        # the per-object head trained with the detector from the COCO weights, in one run
        TrainingStage("multihead", fixed=(("freeze", None),), final_candidate=True),
        # the obvious alternative: the types as detection classes
        TrainingStage("baseline", fixed=(("single_class", False),))):
    register_stage(_stage)
