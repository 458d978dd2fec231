"""Pipeline configuration: which recipe, and each training stage's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.config import from_dict, read_yaml
from mhyolo.defaults import DEFAULT_IMGSZ, training_file
from mhyolo.errors import ConfigError
from mhyolo.model.layers import check_activation
from mhyolo.paths import absolute_path
from mhyolo.pipeline.stage_registry import TRAINING_STAGES


@dataclass
class StageConfig:
    """One training stage: training settings (`hyp`: a YAML path, relative to the pipeline file, or the
    name of a shipped one: hyp, head, joint, multihead) plus overrides."""

    enabled: bool = True
    hyp: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkStage:
    """Export, quantize and benchmark the final model (every format in one table)."""

    enabled: bool = True
    formats: list[str] | None = None  # None: every format mhyolo knows (see `mhyolo benchmark --help`)
    runs: int = 20
    calib_images: int = 50


STUDENT = "student"  # the undistilled student of the distillation stage: the reference every variant must beat


@dataclass
class DistillConfig:
    enabled: bool = False
    # how to train the teacher (a training YAML + overrides), unless `teacher_weights` names one
    teacher: StageConfig = field(default_factory=lambda: StageConfig(hyp="multihead"))
    teacher_weights: str | None = None
    student: StageConfig = field(default_factory=lambda: StageConfig(hyp="multihead"))
    # variant name -> the loss terms it switches on (objective.terms of the training YAML)
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {
        "imitation": {"imitation": {}}, "response_kd": {"response_kd": {}}})
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if self.enabled:
            if not self.seeds:
                raise ConfigError("distill.seeds: at least one seed")
            if not self.variants:
                raise ConfigError("distill.variants: at least one distillation variant to compare")
            if STUDENT in self.variants or "teacher" in self.variants:
                raise ConfigError(f"distill.variants: '{STUDENT}' and 'teacher' are reserved names")


@dataclass
class TwoStageStage:
    """The detector + crop classifier alternative, scored beside the stages' models: a classifier
    trained on the run's data (`preset`: a shipped classifier preset or a YAML file, then
    `overrides`) behind the one-class detector (the `detector` stage's when it runs, else the final
    model's detector part: the same detector, so only the typing differs)."""

    enabled: bool = False
    preset: str = "yolov5n-backbone"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    recipe: str = ""
    imgsz: int = DEFAULT_IMGSZ
    seed: int = 0
    # the activation of every stage's model (silu, relu, leakyrelu), like imgsz a default a stage's
    # overrides may change; null: each architecture's own (silu for all shipped but *-relu)
    act: str | None = None
    detector: StageConfig = field(default_factory=lambda: StageConfig(hyp="hyp"))
    head: StageConfig = field(default_factory=lambda: StageConfig(hyp="head"))
    joint: StageConfig = field(default_factory=lambda: StageConfig(hyp="joint"))
    # the per-object head trained with the detector from the COCO weights, in one run
    multihead: StageConfig = field(default_factory=lambda: StageConfig(enabled=False, hyp="multihead"))
    # the seed's per-image head on the same frozen detector, for comparison with the per-object head
    image_head: StageConfig = field(default_factory=lambda: StageConfig(
        enabled=False, hyp="head", overrides={"model": "yolov5n-imagehead", "augment": {"mosaic": 0.0}}))
    baseline: StageConfig = field(default_factory=lambda: StageConfig(enabled=False, hyp="hyp"))
    # teacher -> student with and without each distillation -> keep the distilled one only if it wins
    distill: DistillConfig = field(default_factory=DistillConfig)
    two_stage: TwoStageStage = field(default_factory=lambda: TwoStageStage())
    benchmark: BenchmarkStage = field(default_factory=lambda: BenchmarkStage())
    latency_runs: int = 20
    # the stage whose best weights become RUN/model.safetensors (exported, benchmarked);
    # None: the last enabled of detector -> head -> joint -> multihead
    final: str | None = None
    base_dir: Path = Path(".")  # folder of the pipeline file; relative paths start there

    def path(self, value: str) -> Path:
        candidate = Path(value)
        return absolute_path(candidate, self.base_dir)  # links kept, as the recipe keeps them

    def training_file(self, value: str) -> Path:
        """A stage's settings: a YAML beside the pipeline file (or an absolute path), else a shipped name."""
        return training_file(value, (self.base_dir,))


# the stages whose model may become RUN/model.safetensors, in training order; the others are comparisons
FINAL_CANDIDATES = (*(s.name for s in TRAINING_STAGES.values() if s.final_candidate), "distill")


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """A pipeline file, or a data recipe (a file with `sources:`), which runs with default stages."""
    path = absolute_path(path)
    data = read_yaml(path)
    if "sources" in data:  # a bare recipe: every stage keeps its shipped settings
        return PipelineConfig(recipe=str(path), base_dir=path.parent)
    config = from_dict(PipelineConfig, {**data, "base_dir": path.parent}, str(path))
    if config.act is not None:
        check_activation(config.act, f"{path}: act")
    if not config.recipe:
        raise ConfigError(f"{path}: 'recipe' (the data recipe to build) is required")
    for start in TRAINING_STAGES:
        needing = [s.name for s in reversed(TRAINING_STAGES.values())
                   if s.starts_from == start and s.start_required and getattr(config, s.name).enabled]
        if needing and not getattr(config, start).enabled:
            raise ConfigError(f"{path}: the {' and '.join(needing)} stage(s) train on the {start} stage's model, "
                              f"which is disabled (enable '{start}' or disable them)")
    if config.two_stage.enabled and not (config.detector.enabled or final_stage(config)):
        raise ConfigError(f"{path}: the two_stage stage needs a one-class detector: enable the detector stage "
                          "or a stage that makes the final model")
    if config.final is not None:
        if config.final not in FINAL_CANDIDATES:
            raise ConfigError(f"{path}: final: '{config.final}' is not a stage that makes the final model "
                              f"(choose from {', '.join(FINAL_CANDIDATES)})")
        if not stage_runs(config, config.final):
            raise ConfigError(f"{path}: final: '{config.final}' names a stage that does not run "
                              f"(joint fine-tuning also needs the head stage)")
    return config


def stage_runs(config: PipelineConfig, name: str) -> bool:
    """Enabled, and runnable: a training stage that starts from another stage's model (joint
    fine-tuning from the head's) runs only when that one does."""
    stage = TRAINING_STAGES.get(name)
    start = stage.starts_from if stage is not None else None
    return getattr(config, name).enabled and (start is None or stage_runs(config, start))


def final_stage(config: PipelineConfig) -> str | None:
    """Which stage's model becomes RUN/model.safetensors."""
    if config.final is not None:
        return config.final
    running = [name for name in FINAL_CANDIDATES if stage_runs(config, name)]
    return running[-1] if running else None
