"""`mhyolo pipeline --config FILE --out RUN`: every stage in a row, resumable stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mhyolo.pipeline.config import PipelineConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="data build -> detector -> type head (frozen, then joint) -> report, in one run folder")
    parser.add_argument("--config", required=True, type=Path,
                        help="a pipeline file (configs/pipeline/*.yaml) or a data recipe (default stages)")
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="run folder (default runs/pipeline)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--plan", action="store_true",
                        help="print every training stage's resolved settings (YAML) and stop: nothing is built or trained")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.pipeline.config import load_pipeline_config
    from mhyolo.pipeline.run import run_pipeline
    from mhyolo.report import write_html_report

    config = load_pipeline_config(args.config)
    if args.plan:
        print_plan(config, args.out)
        return 0
    result = run_pipeline(config, args.out, progress=not args.quiet, html_report=write_html_report)
    print(f"model: {result['model']}\nreport: {result['html']}, {result['report']} and {result['markdown']}")
    return 0


def print_plan(config: PipelineConfig, run: Path) -> None:
    """The stages as `run_pipeline` would train them, so a recipe can be checked before hours of training."""
    import yaml

    from mhyolo.config import to_dict
    from mhyolo.data.recipe import load_recipe
    from mhyolo.model.yolo import config_activation, load_model_config
    from mhyolo.pipeline.config import final_stage
    from mhyolo.pipeline.stages import training_plan

    load_recipe(config.path(config.recipe), seed=config.seed)  # a broken recipe or stage fails here, not hours in
    plan = training_plan(config, run)
    print(f"# recipe: {config.path(config.recipe)}\n# run folder: {run}\n# final model: {final_stage(config)}")
    for name, train in plan.items():
        if train.model:  # every architecture read (a missing one fails here) and named with its activation
            act = train.act or config_activation(load_model_config(train.model))
            print(f"# {name}: {train.model}, act {act}")
    print(yaml.safe_dump({name: to_dict(train) for name, train in plan.items()}, sort_keys=False), end="")
