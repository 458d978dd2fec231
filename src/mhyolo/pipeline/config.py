"""Pipeline configuration: which recipe, and each training stage's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.config import from_dict, read_yaml
from mhyolo.errors import ConfigError
from mhyolo.paths import absolute_path


@dataclass
class StageConfig:
    """One training stage: a training YAML (`hyp`, relative to the pipeline file) plus overrides."""

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


@dataclass
class PipelineConfig:
    recipe: str = ""
    imgsz: int = 640
    seed: int = 0
    detector: StageConfig = field(default_factory=lambda: StageConfig(hyp="../hyp.yaml"))
    head: StageConfig = field(default_factory=lambda: StageConfig(hyp="../head.yaml"))
    joint: StageConfig = field(default_factory=lambda: StageConfig(hyp="../joint.yaml"))
    # the per-object head trained with the detector from the COCO weights, in one run
    multihead: StageConfig = field(default_factory=lambda: StageConfig(
        enabled=False, hyp="../multihead.yaml"))
    # the seed's per-image head on the same frozen detector, for comparison with the per-object head
    image_head: StageConfig = field(default_factory=lambda: StageConfig(
        enabled=False, hyp="../head.yaml", overrides={"model": "configs/models/yolov5n-imagehead.yaml", "augment": {"mosaic": 0.0}}))
    baseline: StageConfig = field(default_factory=lambda: StageConfig(enabled=False, hyp="../hyp.yaml"))
    benchmark: BenchmarkStage = field(default_factory=lambda: BenchmarkStage())
    latency_runs: int = 20
    # the stage whose best weights become RUN/model.safetensors (exported, benchmarked);
    # None: the last enabled of detector -> head -> joint -> multihead
    final: str | None = None
    base_dir: Path = Path(".")  # folder of the pipeline file; relative paths start there

    def path(self, value: str) -> Path:
        candidate = Path(value)
        return absolute_path(candidate, self.base_dir)  # links kept, as the recipe keeps them


DEFAULT_STAGE_FILES = {"detector": "hyp.yaml", "head": "head.yaml", "joint": "joint.yaml",
                       "multihead": "multihead.yaml", "image_head": "head.yaml", "baseline": "hyp.yaml"}
FINAL_CANDIDATES = ("detector", "head", "joint", "multihead")  # in training order; the others are comparisons


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """A pipeline file, or a data recipe (a file with `sources:`), which runs with default stages."""
    path = absolute_path(path)
    data = read_yaml(path)
    configs_dir = Path(__file__).resolve().parents[3] / "configs"
    if "sources" in data:  # a bare recipe: default stages from the shipped configs
        config = PipelineConfig(recipe=str(path), base_dir=path.parent)
        for name, file in DEFAULT_STAGE_FILES.items():
            getattr(config, name).hyp = str(configs_dir / file)
        return config
    config = from_dict(PipelineConfig, {**data, "base_dir": path.parent}, str(path))
    if not config.recipe:
        raise ConfigError(f"{path}: 'recipe' (the data recipe to build) is required")
    frozen = [name for name in ("head", "image_head") if getattr(config, name).enabled]
    if frozen and not config.detector.enabled:
        raise ConfigError(f"{path}: the {' and '.join(frozen)} stage(s) train on the detector stage's model, "
                          f"which is disabled (enable 'detector' or disable them)")
    if config.final is not None:
        if config.final not in FINAL_CANDIDATES:
            raise ConfigError(f"{path}: final: '{config.final}' is not a stage that makes the final model "
                              f"(choose from {', '.join(FINAL_CANDIDATES)})")
        if not stage_runs(config, config.final):
            raise ConfigError(f"{path}: final: '{config.final}' names a stage that does not run "
                              f"(joint fine-tuning also needs the head stage)")
    return config


def stage_runs(config: PipelineConfig, name: str) -> bool:
    """Enabled, and (for joint fine-tuning, which starts from the head stage's model) runnable."""
    return getattr(config, name).enabled and (name != "joint" or config.head.enabled)


def final_stage(config: PipelineConfig) -> str | None:
    """Which stage's model becomes RUN/model.safetensors."""
    if config.final is not None:
        return config.final
    running = [name for name in FINAL_CANDIDATES if stage_runs(config, name)]
    return running[-1] if running else None
