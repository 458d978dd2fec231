"""Run the whole pipeline: data -> detector -> type head (frozen) -> joint, and/or the
multi-head model trained in one run from the COCO weights (-> the detector + crop classifier
alternative) -> benchmark -> report (JSON, Markdown and the self-contained `report.html`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mhyolo.bench.timing import latencies
from mhyolo.pipeline.config import STUDENT, PipelineConfig, final_stage
from mhyolo.pipeline.distill import TEACHER_RUN, decide
from mhyolo.pipeline.report import score, write_report
from mhyolo.pipeline.run_report import RunReport
from mhyolo.pipeline.stage_registry import TRAINING_STAGES
from mhyolo.pipeline.stages import (StageResult, benchmark_stage, build_data, train_stage, training_plan,
                                    two_stage)


def run_pipeline(config: PipelineConfig, run: Path, progress: bool = True, *,
                 html_report: Callable[[Path], Path]) -> dict[str, Any]:
    """Every stage in `run`, each skipped when done; the run's page is written last by `html_report`
    (`report.write_html_report`, given by the command: the report reads what this package writes)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    data = build_data(config, run, progress).folder
    stages: dict[str, StageResult] = {name: train_stage(name, train, run, progress)
                                      for name, train in training_plan(config, run).items()}
    rows = {name: score(stage.weights, data / "data.yaml", config.imgsz)
            for name, stage in stages.items() if stage.weights is not None and stage.weights.exists()}
    decision = None
    if config.distill.enabled:  # evaluate and filter: the distilled student only if it wins
        decision = decide(rows, config.distill)
        stages["distill"] = StageResult("distill", run / "distill", Path(decision.weights), skipped=False)
        print(f"distillation: {decision.reason}")
    final = run / "model.safetensors"
    chosen = final_stage(config)
    final_weights = stages[chosen].weights if chosen in stages else None
    if final_weights is not None:
        shutil.copyfile(final_weights, final)
    if config.two_stage.enabled:  # the detector + crop classifier alternative, scored beside them
        files = two_stage(config, run, data, final_weights, progress)
        rows["two_stage"] = {**score(files["detector"], data / "data.yaml", config.imgsz,
                                     classifier=files["classifier"]),
                             **{name: str(path) for name, path in files.items()}}
    report = RunReport(models=rows, imgsz=config.imgsz, final_model=str(final), final_stage=chosen,
                       distill=decision.to_dict() if decision is not None else None)
    timed = {name: stages[name].weights for name, stage in TRAINING_STAGES.items() if stage.timed and name in stages}
    if decision is not None:  # the teacher's cost, and the student's latency, which distillation leaves unchanged
        timed.update({name: stages[name].weights for name in (TEACHER_RUN, decision.groups[STUDENT]["best_run"],
                                                                decision.groups[decision.chosen]["best_run"])
                      if name in stages})
    if timed:
        ms = latencies(timed, config.imgsz, config.latency_runs)
        for name, value in ms.items():
            rows[name]["latency_ms"] = value
        if "detector" in ms and "head" in ms:
            report.head_overhead = ms["head"] / ms["detector"]
        if "detector" in ms and "image_head" in ms:
            report.image_head_overhead = ms["image_head"] / ms["detector"]
    if config.benchmark.enabled and final_weights is not None:
        report.benchmark = benchmark_stage(config, run, final, data, progress)
    json_path, md_path = write_report(run, report)
    print(md_path.read_text())
    html_path = html_report(run)
    return {"report": json_path, "markdown": md_path, "html": html_path, "model": final, "rows": rows}
