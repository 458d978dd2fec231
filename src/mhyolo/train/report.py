"""What a finished run leaves for a person: the resolved config, curves, PR curve and
a grid of validation predictions, next to `results.csv` and the checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from mhyolo.config import to_dict
from mhyolo.defaults import PREDICT_CONF
from mhyolo.eval.plots import plot_image_grid, plot_pr_curve, plot_training_curves
from mhyolo.eval.validate import ValidationResult, read_images
from mhyolo.train.config import TrainConfig

GRID_IMAGES = 8
GRID_MIN_SCORE = PREDICT_CONF  # the grid shows what a user would see at the default predict threshold


def write_validation_plots(result: ValidationResult, names: list[str], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_pr_curve(result.metrics, out_dir / "pr_curve.png")]
    count = min(GRID_IMAGES, len(result.results))
    if count:
        shown = []
        for r in result.results[:count]:
            keep = r.pred_scores >= GRID_MIN_SCORE
            shown.append(dataclasses.replace(r, pred_boxes=r.pred_boxes[keep], pred_scores=r.pred_scores[keep],
                                             pred_classes=r.pred_classes[keep],
                                             gt_classes=np.zeros_like(r.gt_classes) if len(names) == 1 else r.gt_classes))
        written.append(plot_image_grid(read_images(result.paths[:count]), shown, names, out_dir / "val_predictions.png"))
    return written


def write_run_files(summary, config: TrainConfig) -> None:
    """Write config.yaml and results.png (the training curves)."""
    run_dir = Path(summary.run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    csv_path = run_dir / "results.csv"
    if csv_path.exists():
        plot_training_curves(csv_path, run_dir / "results.png")


def finish_run(summary, config: TrainConfig) -> None:
    """Write config.yaml, results.png, and plots of the best model's validation."""
    run_dir = Path(summary.run_dir)
    write_run_files(summary, config)
    if summary.best.exists():
        from mhyolo.data.dataset import YoloDataset
        from mhyolo.data.spec import load_data_spec
        from mhyolo.eval.validate import validate
        from mhyolo.model.weights import load_model

        model = load_model(summary.best)
        spec = load_data_spec(config.data)
        dataset = YoloDataset(spec, "val", config.imgsz, augment=None)
        result = validate(model, dataset, list(spec.names), batch_size=config.batch, conf=config.val_conf,
                          iou=config.val_iou, class_agnostic=config.single_class, progress=False)
        write_validation_plots(result, ["ball"] if config.single_class else list(spec.names), run_dir)
        print(f"best: {summary.best}  mAP@0.5 {result.metrics.map50:.3f}  mAP@0.5:0.95 {result.metrics.map50_95:.3f}")
        if result.types is not None:
            result.types.write_plots(run_dir)
            print(result.types.table())
