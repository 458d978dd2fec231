"""Ball-type metrics on cases small enough to score by hand.

COCO AP as used below: detections of a class sorted by score, precision made
non-increasing from the right, averaged over the 101 recall thresholds 0, 0.01, ..., 1.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import yaml

from mhyolo.errors import DataError
from mhyolo.eval.matching import match_predictions
from mhyolo.eval.type_metrics import (
    PLOT_NAMES,
    TypedImageResult,
    TypeEvaluator,
    largest_box_type,
    match_pairs,
)

NAMES = ["basketball", "football", "tennis-ball"]
A = [10.0, 10.0, 60.0, 60.0]
B = [100.0, 100.0, 150.0, 150.0]
C = [200.0, 10.0, 250.0, 60.0]
D = [10.0, 100.0, 60.0, 150.0]
NEAR_D = [50.0, 100.0, 100.0, 150.0]  # IoU with D = 500 / 4500 = 0.11


def typed(gt, gt_types, pred=(), scores=(), pred_types=(), type_scores=None, image_type=None,
          name="img.jpg", size=(320, 240)) -> TypedImageResult:
    return TypedImageResult(np.array(gt, dtype=float).reshape(-1, 4), np.array(gt_types, dtype=int),
                            np.array(pred, dtype=float).reshape(-1, 4), np.array(scores, dtype=float),
                            np.array(pred_types, dtype=int), size[0], size[1], name,
                            type_scores=None if type_scores is None else np.array(type_scores, dtype=float),
                            image_type=image_type)


def evaluate(results, conf=0.25, iou=0.5):
    ev = TypeEvaluator(NAMES, iou=iou, conf=conf)
    for r in results:
        ev.add(r)
    return ev.compute()


# 4 ground-truth boxes; A and B typed right, C typed wrong, D found only by a low-IoU box
# and by a box under `conf`.
FOUR = dict(gt=[A, B, C, D], gt_types=[0, 1, 2, 0],
            pred=[A, B, C, NEAR_D, D], scores=[0.9, 0.8, 0.7, 0.95, 0.1], pred_types=[0, 1, 0, 0, 0])


def test_object_accuracy_counts_matched_boxes_only():
    m = evaluate([typed(**FOUR)])
    assert (m.matched, m.gt_boxes) == (3, 4)
    assert m.cls_accuracy == pytest.approx(2 / 3)
    assert m.detection_recall == pytest.approx(3 / 4)
    # Matched pairs (truth, prediction): (0, 0), (1, 1), (2, 0).
    np.testing.assert_array_equal(m.confusion_matrix, [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    assert m.per_type["basketball"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                                      "support": 1})
    assert m.per_type["football"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert m.per_type["tennis-ball"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                       "support": 1})
    assert m.macro == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": (2 / 3 + 1) / 3})


def test_below_conf_detection_is_kept_for_typed_map():
    m = evaluate([typed(**FOUR)])
    # basketball (GT A, D) ranked: NEAR_D 0.95 FP, A 0.9 TP, C 0.7 FP, D 0.1 TP ->
    # (P, R) = (0, 0), (1/2, 1/2), (1/3, 1/2), (1/2, 1): interpolated precision 0.5 everywhere.
    # football: B is a lone TP -> 1. tennis: no detection -> 0.
    assert [c.ap50 for c in m.typed.per_class] == pytest.approx([0.5, 1.0, 0.0])
    assert m.typed_map50 == pytest.approx(0.5)
    assert m.typed_map50_95 == pytest.approx(0.5)  # the matched boxes are exact

    # Without the 0.1 detection, basketball reaches only recall 1/2: AP = 0.5 * 51 / 101.
    four = dict(FOUR, pred=FOUR["pred"][:4], scores=FOUR["scores"][:4], pred_types=FOUR["pred_types"][:4])
    without = evaluate([typed(**four)])
    assert without.typed_map50 == pytest.approx((0.5 * 51 / 101 + 1.0) / 3)
    # ... while the accuracy numbers do not move: the 0.1 box was below conf.
    assert (without.cls_accuracy, without.matched) == (m.cls_accuracy, m.matched)


def test_an_untyped_box_is_left_out_of_the_typed_map_and_refused_where_accuracy_counts_it():
    from mhyolo.infer.types import UNTYPED

    # FOUR with its 0.1 box on D left untyped: the typed mAP is that of FOUR without the box
    untyped = dict(FOUR, pred_types=[0, 1, 0, 0, UNTYPED])
    m = evaluate([typed(**untyped, type_scores=[1.0, 1.0, 1.0, 1.0, 0.0])])
    assert m.untyped == 1 and m.to_dict()["untyped_boxes"] == 1 and "1 low-scoring boxes left untyped" in m.table()
    assert m.typed_map50 == pytest.approx((0.5 * 51 / 101 + 1.0) / 3)
    assert m.typed.predictions == 4
    assert (m.cls_accuracy, m.matched, m.image_accuracy) == (pytest.approx(2 / 3), 3, 1.0)
    # a box the type accuracy counts (score >= conf) must be typed
    with pytest.raises(DataError, match="img.jpg: a detection scoring >= 0.25 was left untyped"):
        evaluate([typed(**dict(FOUR, pred_types=[0, UNTYPED, 0, 0, 0]))])


def test_lowering_conf_lets_the_weak_detection_match():
    m = evaluate([typed(**FOUR)], conf=0.05)
    assert (m.matched, m.cls_accuracy, m.detection_recall) == (4, pytest.approx(3 / 4), 1.0)


def test_typed_map_with_one_wrong_type_and_type_probabilities():
    images = [
        # B is a football but typed basketball, and outscores the correct basketball on A.
        dict(gt=[A, B], gt_types=[0, 1], pred=[B, A], scores=[0.95, 0.9], pred_types=[0, 0]),
        dict(gt=[C], gt_types=[2], pred=[C], scores=[0.7], pred_types=[2]),
    ]
    plain = evaluate([typed(**i) for i in images])
    # basketball: FP then TP -> precision 1/2 at recall 1 -> AP 0.5; football never predicted -> 0;
    # tennis -> 1.
    assert [c.ap50 for c in plain.typed.per_class] == pytest.approx([0.5, 0.0, 1.0])
    assert plain.typed_map50 == pytest.approx(0.5)
    assert plain.typed_map50_95 == pytest.approx(0.5)

    # Type probabilities re-rank: the wrong box scores 0.95 * 0.4 = 0.38 < 0.9, basketball AP -> 1.
    weighted = evaluate([typed(**images[0], type_scores=[0.4, 1.0]), typed(**images[1], type_scores=[1.0])])
    assert [c.ap50 for c in weighted.typed.per_class] == pytest.approx([1.0, 0.0, 1.0])
    assert weighted.typed_map50 == pytest.approx(2 / 3)
    # Matching for accuracy uses the detection score, so the type probabilities change nothing there.
    assert (weighted.matched, weighted.cls_accuracy) == (plain.matched, plain.cls_accuracy) == (3, 2 / 3)


def test_matching_is_one_to_one_greedy_by_score():
    # Two detections on A: the higher score takes it even though its type is wrong.
    m = evaluate([typed([A], [0], [A, A], [0.9, 0.8], [1, 0])])
    assert (m.matched, m.cls_accuracy) == (1, 0.0)
    np.testing.assert_array_equal(m.confusion_matrix, [[0, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_iou_threshold_decides_a_match():
    shifted = [20.0, 10.0, 70.0, 60.0]  # IoU with A = 40*50 / (2*2500 - 2000) = 2/3
    assert evaluate([typed([A], [0], [shifted], [0.9], [0])], iou=0.6).matched == 1
    assert evaluate([typed([A], [0], [shifted], [0.9], [0])], iou=0.7).matched == 0


def test_image_accuracy_uses_largest_box_and_image_head():
    small, large = [10.0, 10.0, 20.0, 20.0], [100.0, 100.0, 200.0, 200.0]
    m = evaluate([
        # small basketball listed first, large football: the image is a football; top detection says football.
        typed([small, large], [0, 1], [small, large], [0.6, 0.9], [0, 1], name="mixed"),
        typed([C], [2], [C, A], [0.8, 0.5], [2, 0], name="tennis"),
        typed([A], [0], [A], [0.1], [0], name="weak"),  # only detection below conf: no prediction
        typed([], [], [B], [0.9], [1], name="empty"),  # no ground truth: not counted
        typed([B], [1], [B], [0.9], [1], image_type=0, name="head-wrong"),  # image head overrides
        typed([C], [2], image_type=2, name="head-only"),  # image head needs no detection
    ])
    assert (m.images, m.images_without_prediction) == (5, 1)
    assert m.image_accuracy == pytest.approx(3 / 5)
    np.testing.assert_array_equal(m.image_confusion_matrix, [[0, 0, 0], [1, 1, 0], [0, 0, 2]])
    assert m.image_per_type["basketball"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                            "support": 1})
    assert m.image_per_type["football"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
                                                          "support": 2})
    assert m.image_per_type["tennis-ball"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                             "support": 2})


def test_largest_box_type():
    assert largest_box_type(np.array([[0, 0, 10, 10], [0, 0, 30, 5], [5, 5, 20, 20]]), np.array([0, 1, 2])) == 2
    assert largest_box_type(np.array([A, B]), np.array([1, 0])) == 1  # equal areas: the first
    with pytest.raises(ValueError, match="no ground-truth box"):
        largest_box_type(np.zeros((0, 4)), np.zeros(0, int))


def test_match_pairs_agrees_with_class_agnostic_match_predictions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        def boxes(n):
            xy = rng.uniform(0, 80, (n, 2))
            return np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1)
        gt, pred = boxes(int(rng.integers(0, 6))), boxes(int(rng.integers(0, 8)))
        scores = rng.choice([0.2, 0.5, 0.9], len(pred))  # ties included
        gi, pi = match_pairs(gt, pred, scores, 0.3)
        tp = match_predictions(gt, np.zeros(len(gt), int), pred, scores, np.zeros(len(pred), int), 0.3)
        assert sorted(pi.tolist()) == np.flatnonzero(tp).tolist()
        assert len(set(gi.tolist())) == len(gi)  # one-to-one


def test_nothing_matched_gives_undefined_accuracy():
    m = evaluate([typed([A], [0], [A], [0.1], [0])])
    assert m.matched == 0 and math.isnan(m.cls_accuracy) and m.detection_recall == 0.0
    assert m.image_accuracy == 0.0 and m.images_without_prediction == 1
    assert m.typed_map50 == pytest.approx(1.0)  # the weak box is still a perfect typed detection
    d = m.to_dict()
    assert d["cls_accuracy"] is None and d["per_type"]["basketball"]["precision"] is None
    assert d["confusion_matrix"] == [[0] * 3] * 3


def test_to_dict_is_plain_and_complete():
    d = evaluate([typed(**FOUR)]).to_dict()
    assert set(d) == {"type_names", "iou", "conf", "cls_accuracy", "matched", "gt_boxes", "detection_recall",
                      "image_accuracy", "images", "images_without_prediction", "typed_map50",
                      "typed_map50_95", "typed_per_type", "per_type", "macro", "confusion_matrix",
                      "image_per_type", "image_confusion_matrix", "untyped_boxes"}
    assert d["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    # each type's AP of the typed mAP, as hand-computed in test_below_conf_detection_is_kept_for_typed_map
    assert {name: row["ap50"] for name, row in d["typed_per_type"].items()} == \
        pytest.approx({"basketball": 0.5, "football": 1.0, "tennis-ball": 0.0})
    assert [row["instances"] for row in d["typed_per_type"].values()] == [2, 1, 1]
    assert d["matched"] == 3 and d["gt_boxes"] == 4
    assert d["image_accuracy"] == 1.0  # equal areas -> first box A (basketball); top box NEAR_D says basketball
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert json.loads(json.dumps(d)) == d


def test_table_lists_every_type():
    text = evaluate([typed(**FOUR)]).table()
    assert "0.667" in text.splitlines()[0]
    assert all(any(line.startswith(n) for line in text.splitlines()) for n in NAMES)


def test_write_plots(tmp_path):
    paths = evaluate([typed(**FOUR)]).write_plots(tmp_path / "plots")
    assert [p.name for p in paths] == [PLOT_NAMES["objects"], PLOT_NAMES["images"], PLOT_NAMES["pr"]]
    for p in paths:
        image = cv2.imread(str(p))
        assert image is not None and image.std() > 0
    assert cv2.imread(str(paths[0])).shape[:2] == (600, 1400)


def test_bad_input_names_the_image():
    ev = TypeEvaluator(NAMES)
    with pytest.raises(DataError, match="x.jpg: predicted type id 3"):
        ev.add(typed([A], [0], [A], [0.9], [3], name="x.jpg"))
    with pytest.raises(DataError, match="y.jpg: ground-truth type id -1"):
        ev.add(typed([A], [-1], name="y.jpg"))
    with pytest.raises(DataError, match="z.jpg: image type id 5"):
        ev.add(typed([A], [0], image_type=5, name="z.jpg"))
    with pytest.raises(ValueError, match="w.jpg: type_scores"):
        typed([A], [0], [A], [0.9], [0], type_scores=[0.5, 0.5], name="w.jpg")
    with pytest.raises(DataError, match="v.jpg: type_scores must be probabilities"):
        typed([A], [0], [A], [0.9], [0], type_scores=[1.5], name="v.jpg")
    with pytest.raises(DataError, match="u.jpg: image_type must be a whole"):
        typed([A], [0], image_type=1.5, name="u.jpg")
    assert len(ev) == 0
    with pytest.raises(DataError, match="empty"):
        ev.compute()
    ev.add(typed([], [], [A], [0.9], [0]))
    with pytest.raises(DataError, match="no ground-truth boxes"):
        ev.compute()
