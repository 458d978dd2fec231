"""`mhyolo pipeline` as a row of registered stages: each reads the run's state, does its one job and
writes its result into the state (its files, its part of the report), in registration order.

Training stages are their own table (`stage_registry`); here they are one step that trains the plan. A
new step after training (a tracking score, a new comparison) is one class with `name`, `enabled` and
`run`, and one `register_run_stage` line: the runner, the report and the plan do not change.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mhyolo.errors import ConfigError
from mhyolo.pipeline.config import STUDENT, PipelineConfig, final_stage
from mhyolo.pipeline.distill import TEACHER_RUN, DistillDecision, decide
from mhyolo.pipeline.report import score
from mhyolo.pipeline.run_report import RunReport
from mhyolo.pipeline.stage_registry import TRAINING_STAGES
from mhyolo.pipeline.stages import StageResult, benchmark_stage, build_data, train_stage, training_plan, two_stage

FINAL_MODEL = "model.safetensors"  # what a run ships, in its folder


@dataclass
class RunState:
    """What the stages hand on: the run's folders, every trained stage's weights, the report being
    filled, the distillation's decision and the final model once chosen."""

    config: PipelineConfig
    run: Path
    progress: bool
    data: Path | None = None  # the dataset folder, once built
    stages: dict[str, StageResult] = field(default_factory=dict)
    report: RunReport = field(default_factory=lambda: RunReport(models={}))
    decision: DistillDecision | None = None
    final_weights: Path | None = None  # the chosen stage's best weights (None: no stage makes a final model)

    @property
    def data_yaml(self) -> Path:
        if self.data is None:
            raise ConfigError("the data stage has not run: no dataset to score on")
        return self.data / "data.yaml"


class RunStage(Protocol):
    name: str

    def enabled(self, config: PipelineConfig) -> bool: ...

    def run(self, state: RunState) -> None: ...


RUN_STAGES: dict[str, RunStage] = {}


def register_run_stage(stage: RunStage) -> RunStage:
    """Add a step to every pipeline run, after the steps registered before it."""
    if stage.name in RUN_STAGES:
        raise ConfigError(f"pipeline stage {stage.name!r} is registered already")
    RUN_STAGES[stage.name] = stage
    return stage


class DataStage:
    """The dataset folder from the recipe (skipped when built)."""

    name = "data"

    def enabled(self, config: PipelineConfig) -> bool:
        return True

    def run(self, state: RunState) -> None:
        state.data = build_data(state.config, state.run, state.progress).folder


class TrainingStages:
    """Every training stage of the plan (`training_plan`), each resumed or skipped when done."""

    name = "train"

    def enabled(self, config: PipelineConfig) -> bool:
        return True

    def run(self, state: RunState) -> None:
        for name, train in training_plan(state.config, state.run).items():
            state.stages[name] = train_stage(name, train, state.run, state.progress)


class ScoreStages:
    """Each trained stage's best model on the run's val split, at the run's input size."""

    name = "score"

    def enabled(self, config: PipelineConfig) -> bool:
        return True

    def run(self, state: RunState) -> None:
        for name, stage in state.stages.items():
            if stage.weights is not None and stage.weights.exists():
                state.report.models[name] = score(stage.weights, state.data_yaml, state.config.imgsz)


class DistillChoice:
    """Evaluate and filter: the distilled student only if it beats the undistilled one beyond the noise."""

    name = "distill"

    def enabled(self, config: PipelineConfig) -> bool:
        return config.distill.enabled

    def run(self, state: RunState) -> None:
        state.decision = decide(state.report.models, state.config.distill)
        state.stages["distill"] = StageResult("distill", state.run / "distill", Path(state.decision.weights),
                                              skipped=False)
        state.report.distill = state.decision.to_dict()
        print(f"distillation: {state.decision.reason}")


class FinalModel:
    """The chosen stage's best weights copied to `RUN/model.safetensors`."""

    name = "final"

    def enabled(self, config: PipelineConfig) -> bool:
        return True

    def run(self, state: RunState) -> None:
        final = state.run / FINAL_MODEL
        chosen = final_stage(state.config)
        state.final_weights = state.stages[chosen].weights if chosen in state.stages else None
        if state.final_weights is not None:
            shutil.copyfile(state.final_weights, final)
        state.report.final_model, state.report.final_stage = str(final), chosen


class TwoStage:
    """The detector + crop classifier alternative, trained and scored beside the other stages."""

    name = "two_stage"

    def enabled(self, config: PipelineConfig) -> bool:
        return config.two_stage.enabled

    def run(self, state: RunState) -> None:
        files = two_stage(state.config, state.run, state.data, state.final_weights, state.progress)
        state.report.models["two_stage"] = {
            **score(files["detector"], state.data_yaml, state.config.imgsz, classifier=files["classifier"]),
            **{name: str(path) for name, path in files.items()}}


class Latency:
    """PyTorch latency of the timed stages, interleaved in one process, and the heads' overhead over the
    detector alone; with distillation the teacher's and the students' too."""

    name = "latency"

    def enabled(self, config: PipelineConfig) -> bool:
        return True

    def run(self, state: RunState) -> None:
        from mhyolo.bench.timing import latencies

        stages, decision = state.stages, state.decision
        timed = {name: stages[name].weights for name, stage in TRAINING_STAGES.items()
                 if stage.timed and name in stages}
        if decision is not None:  # the teacher's cost, and the student's latency, which distillation leaves unchanged
            timed.update({name: stages[name].weights for name in (TEACHER_RUN, decision.groups[STUDENT]["best_run"],
                                                                    decision.groups[decision.chosen]["best_run"])
                          if name in stages})
        if not timed:
            return
        ms = latencies(timed, state.config.imgsz, state.config.latency_runs)
        for name, value in ms.items():
            state.report.models[name]["latency_ms"] = value
        if "detector" in ms and "head" in ms:
            state.report.head_overhead = ms["head"] / ms["detector"]
        if "detector" in ms and "image_head" in ms:
            state.report.image_head_overhead = ms["image_head"] / ms["detector"]


class Benchmark:
    """The final model exported and quantized into every format, each scored and timed."""

    name = "benchmark"

    def enabled(self, config: PipelineConfig) -> bool:
        return config.benchmark.enabled

    def run(self, state: RunState) -> None:
        if state.final_weights is not None:
            state.report.benchmark = benchmark_stage(state.config, state.run, state.run / FINAL_MODEL, state.data,
                                                     state.progress)


for _stage in (DataStage(), TrainingStages(), ScoreStages(), DistillChoice(), FinalModel(), TwoStage(), Latency(),
               Benchmark()):
    register_run_stage(_stage)
