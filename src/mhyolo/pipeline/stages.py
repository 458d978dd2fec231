"""The pipeline's stages. Each writes into its own folder of the run and leaves a
`done.json` when finished, so a re-run skips it and an interrupted one resumes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhyolo.config import load_config, merge, to_dict
from mhyolo.errors import ConfigError
from mhyolo.pipeline.config import STUDENT, PipelineConfig, StageConfig, stage_runs
from mhyolo.pipeline.stage_registry import TRAINING_STAGES
from mhyolo.train.config import TrainConfig

DONE = "done.json"


@dataclass
class StageResult:
    name: str
    folder: Path
    weights: Path | None
    skipped: bool  # already done before this run


def is_done(folder: Path) -> bool:
    return (folder / DONE).is_file()


def mark_done(folder: Path, info: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).write_text(json.dumps(info, indent=2))


def build_data(config: PipelineConfig, run: Path, progress: bool) -> StageResult:
    from mhyolo.data.build import build_dataset
    from mhyolo.data.recipe import load_recipe

    folder = run / "data"
    if is_done(folder):
        return StageResult("data", folder, None, skipped=True)
    recipe = load_recipe(config.path(config.recipe), seed=config.seed)
    build_dataset(recipe, folder, overwrite=True, progress=progress)
    mark_done(folder, {"recipe": str(config.path(config.recipe)), "seed": config.seed})
    return StageResult("data", folder, None, skipped=False)


def _resolve_model(value: str | None, places: list[Path]) -> str | None:
    """A relative architecture path may be written from the working directory, the
    pipeline file, the training YAML or the repository root; shipped names stay names."""
    if not value or Path(value).is_absolute() or Path(value).is_file():
        return value
    for place in places:
        if (place / value).is_file():
            return str((place / value).resolve())
    return value


def train_config(config: PipelineConfig, stage: StageConfig, data: Path, weights: str | None,
                 extra: dict[str, Any] | None = None) -> TrainConfig:
    # nested sections merge key by key: `augment: {slices: {prob: 0.5}}` keeps the training file's other settings
    overrides = merge(merge({"imgsz": config.imgsz, "seed": config.seed, "act": config.act}, stage.overrides),
                      extra or {})
    overrides["data"] = str(data / "data.yaml")
    if weights is not None:
        overrides["weights"] = weights
    hyp = config.training_file(stage.hyp) if stage.hyp else None
    train = load_config(TrainConfig, hyp, overrides)
    places = [config.base_dir] + ([hyp.parent, hyp.parent.parent] if hyp else [])
    train.model = _resolve_model(train.model, places)
    return train


def stage_weights(run: Path, name: str) -> Path:
    """Where a training stage leaves its best weights (known before it runs, so later stages can be planned)."""
    return run / name / "weights" / "best.safetensors"


def training_plan(config: PipelineConfig, run: Path) -> dict[str, TrainConfig]:
    """Every training stage that runs, in order, with its settings resolved: what `--plan` prints and
    what `run_pipeline` trains. Each registered stage starts from the best weights of the stage it
    names (the frozen head from the detector's, joint fine-tuning from the head's), the others from
    the COCO weights; the distillation stage's runs come last."""
    data = run / "data"
    plan: dict[str, TrainConfig] = {}
    for stage in TRAINING_STAGES.values():
        if not stage_runs(config, stage.name):
            continue
        start = str(stage_weights(run, stage.starts_from)) if stage.starts_from else None
        plan[stage.name] = train_config(config, getattr(config, stage.name), data, start, dict(stage.fixed) or None)
    if config.distill.enabled:
        plan.update(distillation_plan(config, run))
    return plan


def distillation_plan(config: PipelineConfig, run: Path) -> dict[str, TrainConfig]:
    """The teacher (unless given), then per seed the undistilled student and each variant: the same
    student settings, the variant adding its loss terms and the teacher."""
    from mhyolo.pipeline.distill import TEACHER_RUN, run_name

    distill, data = config.distill, run / "data"
    plan: dict[str, TrainConfig] = {}
    if distill.teacher_weights:
        teacher = str(config.path(distill.teacher_weights))
    else:
        plan[TEACHER_RUN] = train_config(config, distill.teacher, data, None, {"freeze": None})
        teacher = str(stage_weights(run, TEACHER_RUN))
    for seed in distill.seeds:
        plan[run_name(STUDENT, seed)] = train_config(config, distill.student, data, None,
                                                     {"freeze": None, "seed": seed})
        for variant, terms in distill.variants.items():
            plan[run_name(variant, seed)] = train_config(
                config, distill.student, data, None,
                {"freeze": None, "seed": seed, "teacher": teacher, "objective": {"terms": terms}})
    return plan


def train_stage(name: str, train: TrainConfig, run: Path, progress: bool,
                finish: Callable[[Any, TrainConfig], None] | None = None) -> StageResult:
    """Train `run/name` (resumed from its last checkpoint, skipped when done); `finish` writes what the
    run leaves besides its weights (default `train.report.finish_run`: settings, curves, validation plots)."""
    from mhyolo.train.report import finish_run
    from mhyolo.train.trainer import Trainer

    folder = run / name
    best = stage_weights(run, name)
    if is_done(folder):
        return StageResult(name, folder, best, skipped=True)
    resume = (folder / "weights" / "last.safetensors").is_file()
    if not resume and folder.exists():
        shutil.rmtree(folder)  # a stage that died before its first checkpoint starts over
    print(f"\n== {name}: {'resuming' if resume else 'training'} ({train.epochs} epochs at {train.imgsz})")
    summary = Trainer(train, folder, progress=progress, resume=resume).run()
    (finish or finish_run)(summary, train)
    mark_done(folder, {"epochs": summary.epochs_run, "best_fitness": summary.best_fitness,
                       "config": to_dict(train)})
    return StageResult(name, folder, summary.best, skipped=False)


def benchmark_stage(config: PipelineConfig, run: Path, model: Path, data: Path, progress: bool) -> dict[str, Any]:
    """Export and quantize the final model into every format and score/time them together,
    beside its own detector part (the heads' overhead); skipped when done (kept in `benchmark/`)."""
    from mhyolo.bench.formats import FORMATS
    from mhyolo.bench.run import BenchSettings, run_benchmark

    folder = run / "benchmark"
    if is_done(folder):
        return json.loads((folder / DONE).read_text())
    stage = config.benchmark
    print(f"\n== benchmark: {', '.join(stage.formats or FORMATS)} at {config.imgsz}")
    result = run_benchmark(BenchSettings(weights=model, data=data / "data.yaml", imgsz=config.imgsz, out=folder,
                                         formats=tuple(stage.formats or FORMATS), runs=stage.runs,
                                         calib_images=stage.calib_images, progress=progress))
    info = {name: str(path) for name, path in result.paths.items()}
    mark_done(folder, info)
    return info


def two_stage_detector(config: PipelineConfig, run: Path, final: Path | None) -> Path:
    """The one-class detector of the two-stage model: the detector stage's, else the final model's
    detector part (written once into `two_stage/`)."""
    if config.detector.enabled:
        return stage_weights(run, "detector")
    if final is None:
        raise ConfigError("the two_stage stage needs a one-class detector and this run makes none")
    from mhyolo.model.weights import load_model, save_checkpoint
    from mhyolo.model.yolo import detector_part

    target = run / "two_stage" / "detector.safetensors"
    if not target.is_file():
        save_checkpoint(target, detector_part(load_model(final)), {"derived_from": str(final)})
    return target


def two_stage(config: PipelineConfig, run: Path, data: Path, final: Path | None, progress: bool) -> dict[str, Path]:
    """Train the crop classifier on the run's data (resumable: skipped when done) and name both files."""
    from mhyolo.classify.train import load_classify_config, train_classifier

    folder = run / "two_stage"
    detector = two_stage_detector(config, run, final)
    classifier_run = folder / "classifier"
    if not is_done(classifier_run):
        stage = config.two_stage
        preset = str(config.path(stage.preset)) if config.path(stage.preset).is_file() else stage.preset
        settings = load_classify_config(preset, {"seed": config.seed, **stage.overrides,
                                                 "data": str(data / "data.yaml")})
        print(f"\n== two_stage: crop classifier {settings.model} ({settings.epochs} epochs at {settings.imgsz})")
        result = train_classifier(settings, classifier_run, progress=progress)
        mark_done(classifier_run, {"best": str(result.best), "metrics": result.metrics})
    return {"detector": detector, "classifier": classifier_run / "weights" / "best.safetensors"}
