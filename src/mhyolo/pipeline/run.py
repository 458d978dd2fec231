"""Run the whole pipeline: data -> detector -> type head (frozen) -> joint, and/or the
multi-head model trained in one run from the COCO weights (-> the detector + crop classifier
alternative) -> benchmark -> report (JSON, Markdown and the self-contained `report.html`).
The steps are the registered `run_stages`, run in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mhyolo.pipeline.config import PipelineConfig
from mhyolo.pipeline.report import write_report
from mhyolo.pipeline.run_report import RunReport
from mhyolo.pipeline.run_stages import FINAL_MODEL, RUN_STAGES, RunState


def run_pipeline(config: PipelineConfig, run: Path, progress: bool = True, *,
                 html_report: Callable[[Path], Path]) -> dict[str, Any]:
    """Every stage in `run`, each skipped when done; the run's page is written last by `html_report`
    (`report.write_html_report`, given by the command: the report reads what this package writes)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    state = RunState(config, run, progress, report=RunReport(models={}, imgsz=config.imgsz))
    for stage in RUN_STAGES.values():
        if stage.enabled(config):
            stage.run(state)
    json_path, md_path = write_report(run, state.report)
    print(md_path.read_text())
    html_path = html_report(run)
    return {"report": json_path, "markdown": md_path, "html": html_path, "model": run / FINAL_MODEL,
            "rows": state.report.models}
