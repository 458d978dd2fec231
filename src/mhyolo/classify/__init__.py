"""Crop classifiers: the second stage of a detector + classifier ("two-stage") model.

`mhyolo classify train|val|export` trains one on crops of a dataset's ground-truth boxes, scores
it and exports it; `--classifier` in `val`, `predict` and `benchmark` puts it behind a one-class
detector through the type seam (`mhyolo.infer.types`).
"""
