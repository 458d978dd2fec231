"""`mhyolo crossval`: leave-one-source-out cross-validation of a training recipe.

For each source of the data recipe: build the fold without it (`data.folds`), train the
recipe's final model on the rest, and score the held-out source's images. One folder per
fold (`DIR/<source>/{data,train}/`, `score.json`), each step leaving `done.json` like the
pipeline's stages, so a re-run skips finished folds and an interrupted training resumes.
The table of held-out scores is the project's measure of how a recipe generalises to
photos from elsewhere: defaults are chosen by it, not by the val split of seen sources.

A pipeline whose final stage is `distill` is cross-validated whole: each fold trains its own
teacher (one trained on every source would have seen the held-out one), then per seed the
undistilled student and each variant, and every one of them is scored on the held-out source
(`crossval_candidates` turns those scores into the distillation's held-out decision).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.data.recipe import Recipe, load_recipe
from mhyolo.errors import ConfigError
from mhyolo.eval.results import seen_type_scores, select
from mhyolo.pipeline.config import PipelineConfig, StageConfig, final_stage, load_pipeline_config
from mhyolo.pipeline.stage_registry import TRAINING_STAGES
from mhyolo.pipeline.stages import is_done, mark_done, train_config, train_stage
from mhyolo.train.config import TrainConfig

SCORE_JSON = "score.json"


@dataclass
class CrossvalSettings:
    """What to cross-validate and how; `None` keeps the pipeline file's value."""

    config: Path  # a pipeline file (its final stage's training is used) or a bare data recipe
    out: Path
    imgsz: int | None = None
    epochs: int | None = None
    seed: int | None = None
    sources: list[str] | None = None  # hold out only these (default: each source in turn)
    eval_imgsz: list[int] = field(default_factory=list)  # extra sizes to score the held-out images at
    progress: bool = True


PRIMARY = "train"  # the one run of an ordinary fold (its folder and the fold's row)


@dataclass
class Fold:
    held_out: str
    folder: Path
    runs: dict[str, TrainConfig]  # run folder (under the fold) -> settings, in training order
    primary: str = PRIMARY  # the run whose scores are the fold's row of the main table

    @property
    def train(self) -> TrainConfig:
        return self.runs[self.primary]


ONE_RUN_STAGE = "multihead"  # detector and type head trained together from the COCO weights, in one run


def _stage(config: PipelineConfig) -> StageConfig:
    """The stage whose model the pipeline ships: that is the recipe cross-validated. A bare data
    recipe gets the multi-head model trained from the COCO weights."""
    name = final_stage(config)
    stage = TRAINING_STAGES.get(name or "")
    if name is None or (stage is not None and stage.starts_from is not None):
        name = ONE_RUN_STAGE  # a stage that starts from another's model needs that run first: the one-run model
    return getattr(config, name)


def _distills(config: PipelineConfig) -> bool:
    return final_stage(config) == "distill"


def _fold_runs(config: PipelineConfig, folder: Path, extra: dict[str, Any]) -> tuple[dict[str, TrainConfig], str]:
    """The runs a fold trains and which of them makes its row: the final stage's one run, or for a
    distillation the teacher, the students and the variants (the row: the undistilled student's first seed)."""
    if not _distills(config):
        return {PRIMARY: train_config(config, _stage(config), folder / "data", None, extra)}, PRIMARY
    from mhyolo.pipeline.config import STUDENT
    from mhyolo.pipeline.distill import run_name
    from mhyolo.pipeline.stages import distillation_plan

    return distillation_plan(config, folder), run_name(STUDENT, config.distill.seeds[0])


def plan(settings: CrossvalSettings) -> tuple[PipelineConfig, Recipe, list[Fold]]:
    config = load_pipeline_config(settings.config)
    if settings.imgsz is not None:
        config.imgsz = settings.imgsz
    if settings.seed is not None:
        config.seed = settings.seed
    recipe = load_recipe(config.path(config.recipe), seed=config.seed)
    ids = [src.id for src in recipe.sources]
    wanted = settings.sources or ids
    unknown = [s for s in wanted if s not in ids]
    if unknown:
        raise ConfigError(f"--sources: {', '.join(unknown)} not in the recipe (sources: {', '.join(ids)})")
    if len(ids) < 2:
        raise ConfigError(f"{config.path(config.recipe)}: leave-one-source-out needs at least two sources")
    extra: dict[str, Any] = {"freeze": None}
    if _distills(config):
        if config.distill.teacher_weights:
            raise ConfigError(f"{settings.config}: distill.teacher_weights: a given teacher was trained on every "
                              "source, the held-out one too; cross-validation trains a teacher per fold "
                              "(remove teacher_weights)")
        if settings.epochs is not None:
            raise ConfigError(f"{settings.config}: --epochs: a distillation's teacher and student train for "
                              "different numbers of epochs; set them in the pipeline file's distill stage")
    if settings.epochs is not None:
        extra["epochs"] = settings.epochs
    folds = []
    for source in wanted:
        folder = settings.out / source
        folds.append(Fold(source, folder, *_fold_runs(config, folder, extra)))
    return config, recipe, folds


def score_fold(fold: Fold, weights: Path, sizes: list[int], progress: bool) -> dict[str, Any]:
    """The held-out source's images (the fold's test split) scored at each size."""
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import score_split
    from mhyolo.runtime.load import load_backend

    backend = load_backend(weights)
    spec = load_data_spec(fold.folder / "data" / "data.yaml")
    types_trained = json.loads((fold.folder / "data" / "fold.json").read_text())["types_in_training"]
    scores: dict[str, Any] = {}
    for size in sizes:
        result = score_split(backend, spec, size, split="test", progress=progress)
        row: dict[str, Any] = {
            **select(result.part("detection"), ("map50", "map50_95", "precision", "recall", "images", "boxes")),
            **result.part("negatives"), **result.part("size")}
        types = result.part("types")
        if types is not None:
            row.update(seen_type_scores(types, types_trained))
        row["types_in_training"] = types_trained
        scores[str(size)] = row
    return scores


def sizes_to_score(done: dict[str, Any], sizes: list[int]) -> list[int]:
    """The sizes a run's model must be scored at (again), given its stored `done` entry: each asked-for size
    without a score, and every stored size scored before the per-ball-size scores existed (no `size_bins`),
    so a finished fold of an older folder gains them by scoring alone, without training again."""
    scores = done.get("scores", {})
    wanted = [*sizes, *(int(s) for s in scores if int(s) not in sizes)]
    return [s for s in wanted if "size_bins" not in scores.get(str(s), {})]


def run_crossval(settings: CrossvalSettings, *, html_report: Callable[[Path], Path]) -> dict[str, Any]:
    """Every fold (skipping finished steps), then `crossval.json`, `crossval.md`, `crossval.png` and
    `report.html` (written by `html_report`, `report.write_html_report` as the command gives it)."""
    from mhyolo.data.folds import build_fold, scan_all
    from mhyolo.pipeline.crossval_report import write_crossval_report

    config, recipe, folds = plan(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    scans = None
    rows: dict[str, Any] = {}
    for number, fold in enumerate(folds, start=1):
        print(f"\n== fold {number}/{len(folds)}: {fold.held_out} held out")
        data = fold.folder / "data"
        if not is_done(data):
            scans = scans if scans is not None else scan_all(recipe, settings.progress)
            report = build_fold(recipe, fold.held_out, data, scans=scans, progress=settings.progress)
            mark_done(data, {"held_out": fold.held_out, "seed": recipe.seed, "counts": report.counts})
        score_path = fold.folder / SCORE_JSON
        previous = json.loads(score_path.read_text()) if score_path.is_file() else {}
        sizes = [fold.train.imgsz, *[s for s in settings.eval_imgsz if s != fold.train.imgsz]]
        counts = json.loads((data / "done.json").read_text())["counts"]
        runs = previous.get("runs", {PRIMARY: previous} if previous else {})
        for name, train in fold.runs.items():
            started = time.perf_counter()
            trained = train_stage(name, train, fold.folder, settings.progress)
            seconds = None if trained.skipped else time.perf_counter() - started
            done = runs.get(name, {})
            todo = sizes_to_score(done, sizes)
            if todo:
                scores = {**done.get("scores", {}), **score_fold(fold, trained.weights, todo, settings.progress)}
                runs[name] = {"weights": str(trained.weights), "train_seconds": seconds or done.get("train_seconds"),
                              "scores": scores}
                score_path.write_text(json.dumps(_fold_row(fold, counts, runs), indent=2))
        rows[fold.held_out] = _fold_row(fold, counts, runs)
    summary = {"config": str(settings.config), "recipe": str(config.path(config.recipe)), "seed": config.seed,
               "imgsz": config.imgsz, "train": _train_summary(folds[0].train), "folds": rows}
    if _distills(config):
        from mhyolo.pipeline.crossval_candidates import distill_on_held_out

        summary["distill"] = distill_on_held_out(rows, config.distill, str(config.imgsz))
    paths = write_crossval_report(settings.out, summary)
    paths["html"] = html_report(settings.out)
    print(paths["markdown"].read_text())
    return {**summary, "paths": {k: str(v) for k, v in paths.items()}}


def _fold_row(fold: Fold, counts: dict[str, Any], runs: dict[str, Any]) -> dict[str, Any]:
    """`score.json` of a fold: its primary run's scores at the top (the main table), and with more than
    one run every run's under `runs`."""
    primary = runs.get(fold.primary, {})
    row = {"held_out": fold.held_out, "weights": primary.get("weights"), "imgsz": fold.train.imgsz,
           "counts": counts, "train_seconds": primary.get("train_seconds"), "scores": primary.get("scores", {})}
    if len(fold.runs) > 1:
        row["runs"] = {name: runs[name] for name in fold.runs if name in runs}
    return row


def _train_summary(train: TrainConfig) -> dict[str, Any]:
    from mhyolo.config import to_dict

    return {k: v for k, v in to_dict(train).items() if k != "data"}
