"""Pipeline configuration: which recipe, and each training stage's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.config import from_dict, read_yaml
from mhyolo.errors import ConfigError


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
    # the seed's per-image head on the same frozen detector, for comparison with the per-object head
    image_head: StageConfig = field(default_factory=lambda: StageConfig(
        enabled=False, hyp="../head.yaml", overrides={"model": "configs/models/yolov5n-imagehead.yaml", "augment": {"mosaic": 0.0}}))
    baseline: StageConfig = field(default_factory=lambda: StageConfig(enabled=False, hyp="../hyp.yaml"))
    benchmark: BenchmarkStage = field(default_factory=lambda: BenchmarkStage())
    latency_runs: int = 20
    base_dir: Path = Path(".")  # folder of the pipeline file; relative paths start there

    def path(self, value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()


DEFAULT_STAGE_FILES = {"detector": "hyp.yaml", "head": "head.yaml", "joint": "joint.yaml",
                       "image_head": "head.yaml", "baseline": "hyp.yaml"}


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """A pipeline file, or a data recipe (a file with `sources:`), which runs with default stages."""
    path = Path(path).resolve()
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
    return config
