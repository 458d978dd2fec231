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
    with pytest.raises(KeyError, match="no metric 'mask_map50'"):
        metric("mask_map50")


def test_seen_type_scores_count_only_types_the_model_trained_on():
    names = ["basketball", "football", "tennis"]
    matrix = [[8, 2, 0], [1, 4, 0], [0, 3, 5]]
    seen = seen_type_scores({"type_names": names, "confusion_matrix": matrix, "typed_map50": 0.4,
                             "typed_map50_95": 0.2}, ["basketball", "football"])
    assert seen == {"cls_accuracy": 12 / 15, "typed_boxes": 15, "typed_map50": None, "typed_map50_95": None}
