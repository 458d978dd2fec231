"""The one results vocabulary: the fitness that chooses models, joining scorers' parts into one row,
the metric registry the tables read."""

from __future__ import annotations

import math

import pytest

from mhyolo.errors import ConfigError
from mhyolo.eval.results import Metric, columns, fitness, flatten, metric, register_metric, seen_type_scores


def test_fitness_is_yolov5s_of_the_typed_map_when_there_is_one():
    assert fitness({"map50": 0.5, "map50_95": 0.3}) == pytest.approx(0.1 * 0.5 + 0.9 * 0.3)
    typed = {"map50": 1.0, "map50_95": 1.0, "typed_map50": 0.5, "typed_map50_95": 0.3}
    assert fitness(typed) == pytest.approx(0.32)


def test_an_undefined_typed_map_counts_as_absent_not_as_nan():
    # a NaN fitness never compares greater, so a run would never keep a best checkpoint
    row = {"map50": 0.6, "map50_95": 0.4, "typed_map50": math.nan, "typed_map50_95": math.nan}
    assert fitness(row) == pytest.approx(0.42)
    assert fitness({**row, "typed_map50": None, "typed_map50_95": None}) == pytest.approx(0.42)


def test_flatten_keeps_every_part_and_names_a_shared_key_by_its_part():
    row = flatten([("detection", {"images": 10, "map50": 0.5}), ("types", {"images": 7, "cls_accuracy": 0.9})])
    assert row == {"images": 10, "map50": 0.5, "types_images": 7, "cls_accuracy": 0.9}
    assert list(row) == ["images", "map50", "types_images", "cls_accuracy"]


def test_metric_registry_labels_and_refuses_a_second_meaning():
    assert columns("map50", "cls_accuracy") == (("map50", "mAP50"), ("cls_accuracy", "type acc"))
    assert metric("false_positives_per_negative_image").higher_is_better is False
    assert metric("map50").cell(None) == "–" and metric("map50").cell(math.nan) == "–"
    assert metric("map50").cell(0.12345) == "0.123"
    register_metric(Metric("map50", "mAP50"))  # the same meaning again is fine
    with pytest.raises(ConfigError, match="map50"):
        register_metric(Metric("map50", "mAP at 0.5"))
    with pytest.raises(KeyError, match="no metric 'keypoint_map50'"):
        metric("keypoint_map50")


def test_seen_type_scores_count_only_types_the_model_trained_on():
    names = ["basketball", "football", "tennis"]
    matrix = [[8, 2, 0], [1, 4, 0], [0, 3, 5]]
    seen = seen_type_scores({"type_names": names, "confusion_matrix": matrix, "typed_map50": 0.4,
                             "typed_map50_95": 0.2}, ["basketball", "football"])
    assert seen == {"cls_accuracy": 12 / 15, "typed_boxes": 15, "typed_map50": None, "typed_map50_95": None}


def test_val_summary_keeps_the_detection_image_count_beside_the_types_one():
    """A typed model's `val --json`: "images" is every scored image (ball-free ones too), the type
    scorer's count of images with typed ground truth is "types_images"."""
    import numpy as np

    from mhyolo.eval.metrics import DetectionEvaluator, ImageResult
    from mhyolo.eval.type_metrics import TypedImageResult, TypeEvaluator
    from mhyolo.eval.validate import ValidationResult

    box = np.array([[10.0, 10.0, 30.0, 30.0]], np.float32)
    none = np.zeros((0, 4), np.float32)
    images = [(box, np.array([1])), (box, np.array([0])), (none, np.zeros(0, np.int64))]  # the last: no ball
    detection, types = DetectionEvaluator(["basketball", "football"]), TypeEvaluator(["basketball", "football"])
    results = []
    for i, (gt, gt_types) in enumerate(images):
        results.append(ImageResult(gt, gt_types, box, np.array([0.9], np.float32), np.array([0]), 64, 64, f"{i}"))
        detection.add(results[-1])
        types.add(TypedImageResult(gt, gt_types, box, np.array([0.9], np.float32), np.array([1]), 64, 64, f"{i}",
                                   type_scores=np.array([0.8], np.float32), image_type=None))
    result = ValidationResult(metrics=detection.compute(), results=results, types=types.compute())
    summary = result.summary()
    assert summary["images"] == 3 and summary["boxes"] == 2
    assert summary["types_images"] == 2
    assert summary["negative_images"] == 1 and summary["cls_accuracy"] == 0.5
