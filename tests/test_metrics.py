"""Detection and classification metrics on cases small enough to score by hand.

COCO AP reminder used in the derivations below: detections of a class are sorted by
score; precision p_i and recall r_i are taken after each one; precision is made
non-increasing from the right (p_i = max_{j>=i} p_j); AP is the mean over the 101
recall thresholds t = 0, 0.01, ..., 1 of the precision at the first i with r_i >= t
(0 when no such i). mAP@0.5:0.95 averages AP over IoU 0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mhyolo.data.labels import read_labels
from mhyolo.errors import DataError
from mhyolo.eval.matching import best_f1_point, match_predictions
from mhyolo.eval.metrics import (
    DetectionEvaluator,
    ImageResult,
    classification_report,
    confusion_matrix,
)
from mhyolo.paths import shared_dir

NAMES = ["basketball", "football", "tennis-ball"]
A = [10.0, 10.0, 60.0, 60.0]
B = [100.0, 100.0, 150.0, 150.0]
FAR = [200.0, 10.0, 230.0, 40.0]  # overlaps neither A nor B


def result(gt, gt_cls, pred=(), scores=(), pred_cls=(), size=(320, 240), name="img.jpg") -> ImageResult:
    return ImageResult(np.array(gt, dtype=float).reshape(-1, 4), np.array(gt_cls, dtype=int),
                       np.array(pred, dtype=float).reshape(-1, 4), np.array(scores, dtype=float),
                       np.array(pred_cls, dtype=int), size[0], size[1], name)


def evaluate(results, names=NAMES, agnostic=False):
    ev = DetectionEvaluator(names, class_agnostic=agnostic)
    for r in results:
        ev.add(r)
    return ev.compute()


# (a) every ground-truth box found exactly, once, nothing else.
def test_perfect_predictions_score_one():
    m = evaluate([
        result([A, B], [0, 1], [A, B], [0.9, 0.6], [0, 1]),
        result([B], [2], [B], [0.8], [2]),
    ])
    assert m.map50 == pytest.approx(1.0, abs=1e-9)
    assert m.map50_95 == pytest.approx(1.0, abs=1e-9)
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    # Mean F1 over the 3 classes is 1/3 at 0.9, 2/3 at 0.8 and 1 only at 0.6.
    assert m.conf_threshold == 0.6
    assert (m.images, m.boxes, m.predictions) == (2, 3, 3)
    assert [c.instances for c in m.per_class] == [1, 1, 1]
    assert all(c.ap50 == pytest.approx(1.0) for c in m.per_class)


# (b) two balls, predictions: A at 0.9 (TP), a false positive at 0.8, B at 0.7 (TP).
def test_false_positive_between_hits_gives_hand_computed_ap():
    # Ranked: TP, FP, TP -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # Interpolated (max to the right): 1, 2/3, 2/3.
    # Thresholds t = 0.00..0.50 (51 of them) reach recall 1/2 at the first detection -> 1.
    # Thresholds t = 0.51..1.00 (50 of them) need the third detection -> 2/3.
    # AP = (51 * 1 + 50 * 2/3) / 101 = 253 / 303. Boxes are exact, so every IoU threshold agrees.
    expected = (51 + 50 * 2 / 3) / 101
    m = evaluate([result([A, B], [0, 0], [A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])])
    assert m.map50 == pytest.approx(expected, abs=1e-6)
    assert m.map50_95 == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(253 / 303, abs=1e-12)
    # Operating point: at 0.9 P=1 R=1/2 F1=2/3; at 0.8 P=1/2 R=1/2 F1=1/2; at 0.7 P=2/3 R=1 F1=4/5.
    assert m.conf_threshold == 0.7
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(1.0)
    assert m.f1 == pytest.approx(0.8)
    # Only class 0 has ground truth: the other classes are nan and left out of the means.
    assert math.isnan(m.per_class[1].ap50) and math.isnan(m.per_class[2].precision)
    # The PR curve data is COCO's interpolated precision at IoU 0.5.
    assert m.recall_grid.shape == (101,) and m.pr_precision.shape == (3, 101)
    np.testing.assert_allclose(m.pr_precision[0, :51], 1.0)
    np.testing.assert_allclose(m.pr_precision[0, 51:], 2 / 3)
    assert np.isnan(m.pr_precision[1]).all()


# (c) IoU 0.625: a hit at IoU 0.50, 0.55, 0.60, a miss from 0.65 up.
def test_partial_overlap_counts_only_at_low_iou_thresholds():
    gt = [0.0, 0.0, 100.0, 100.0]
    pred = [0.0, 0.0, 100.0, 62.5]  # IoU = 6250 / 10000 = 0.625
    m = evaluate([result([gt], [0], [pred], [0.9], [0], size=(200, 200))])
    # AP is 1 at the 3 thresholds 0.50, 0.55, 0.60 and 0 at the 7 others (0.65..0.95, 0.75 among them).
    assert m.map50 == pytest.approx(1.0, abs=1e-6)
    assert m.map50_95 == pytest.approx(3 / 10, abs=1e-6)


def test_iou_just_below_half_is_a_miss():
    gt = [0.0, 0.0, 100.0, 100.0]
    pred = [0.0, 0.0, 100.0, 49.0]  # IoU 0.49
    m = evaluate([result([gt], [0], [pred], [0.9], [0], size=(200, 200))])
    assert m.map50 == 0.0 and m.map50_95 == 0.0
    assert m.precision == 0.0 and m.recall == 0.0


# (d) boxes right, types swapped: per class every prediction is wrong, class-agnostic all right.
def test_class_agnostic_ignores_wrong_types():
    results = [result([A, B], [0, 1], [A, B], [0.9, 0.8], [1, 0])]
    per_class = evaluate(results)
    assert per_class.map50 == 0.0 and per_class.map50_95 == 0.0
    assert per_class.recall == 0.0
    agnostic = evaluate(results, agnostic=True)
    assert agnostic.names == ["ball"]
    assert [c.name for c in agnostic.per_class] == ["ball"]
    assert agnostic.map50 == pytest.approx(1.0) and agnostic.map50_95 == pytest.approx(1.0)
    assert agnostic.per_class[0].instances == 2 and agnostic.per_class[0].predictions == 2
    assert (agnostic.precision, agnostic.recall) == (1.0, 1.0)


# (e) nothing predicted anywhere.
def test_no_predictions_scores_zero():
    m = evaluate([result([A], [0]), result([B], [2])])
    assert m.map50 == 0.0 and m.map50_95 == 0.0
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert m.conf_threshold is None
    assert m.predictions == 0 and m.boxes == 2
    assert m.to_dict()["conf_threshold"] is None


def test_predictions_on_negative_images_are_false_positives():
    # Image 1 holds ball A found at 0.9; image 2 has no ball but gets a box at 0.95.
    # Ranked: FP (0.95), TP (0.9) -> precision 0, 1/2; recall 0, 1; interpolated 1/2, 1/2.
    # Every threshold t in 0..1 is reached at the second detection -> AP = 1/2.
    m = evaluate([result([A], [0], [A], [0.9], [0]), result([], [], [FAR], [0.95], [0])])
    assert m.map50 == pytest.approx(0.5, abs=1e-6)
    assert m.images == 2
    # Without the negative image the same prediction set would be perfect.
    assert evaluate([result([A], [0], [A], [0.9], [0])]).map50 == pytest.approx(1.0)


def test_map_is_mean_over_classes_with_ground_truth():
    # Class 0 perfect (AP 1). Class 1: FP at 0.9 then TP at 0.5 -> interpolated precision 1/2
    # everywhere -> AP 1/2. Class 2 has no ground truth (its false positive is not counted).
    m = evaluate([result([A, B], [0, 1], [A, FAR, B, [5, 5, 20, 20]], [0.8, 0.9, 0.5, 0.7], [0, 1, 1, 2])])
    assert m.per_class[0].ap50 == pytest.approx(1.0)
    assert m.per_class[1].ap50 == pytest.approx(0.5)
    assert math.isnan(m.per_class[2].ap50)
    assert m.map50 == pytest.approx(0.75)
    assert [c.predictions for c in m.per_class] == [1, 2, 1]


def test_compute_is_repeatable_and_reset_empties():
    ev = DetectionEvaluator(NAMES)
    ev.add(result([A, B], [0, 0], [A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0]))
    first, second = ev.compute(), ev.compute()
    assert first.map50 == second.map50 and first.map50_95 == second.map50_95
    assert len(ev) == 1
    ev.reset()
    assert len(ev) == 0
    with pytest.raises(DataError, match="empty"):
        ev.compute()


def test_empty_dataset_and_no_ground_truth_are_errors():
    with pytest.raises(DataError, match="no images"):
        DetectionEvaluator(NAMES).compute()
    with pytest.raises(DataError, match="no ground-truth boxes"):
        evaluate([result([], [], [A], [0.5], [0])])


def test_bad_input_is_reported_with_the_image_name():
    ev = DetectionEvaluator(NAMES)
    with pytest.raises(DataError, match=r"frame_7\.jpg.*class id 3"):
        ev.add(result([A], [3], name="frame_7.jpg"))
    with pytest.raises(DataError, match=r"frame_8\.jpg.*predicted class id -1"):
        ev.add(result([A], [0], [A], [0.5], [-1], name="frame_8.jpg"))
    with pytest.raises(DataError, match=r"frame_9\.jpg: gt_boxes.*x2 >= x1"):
        result([[50, 10, 10, 60]], [0], name="frame_9.jpg")
    with pytest.raises(ValueError, match=r"pred_scores.*\(2,\)"):
        result([A], [0], [A, B], [0.5], [0, 0])
    with pytest.raises(ValueError, match=r"gt_boxes.*\(n, 4\)"):
        ImageResult(np.zeros((2, 5)), np.zeros(2), np.zeros((0, 4)), np.zeros(0), np.zeros(0), 10, 10)
    with pytest.raises(DataError, match="image size"):
        result([A], [0], size=(0, 240))
    assert len(ev) == 0  # nothing half-added


def test_match_predictions_greedy_by_score_and_class():
    gt = np.array([A, B])
    near_a = [12.0, 12.0, 60.0, 60.0]  # IoU with A = 2304 / 2500 > 0.9
    pred = np.array([near_a, A, B, B])
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    classes = np.array([0, 0, 1, 0])
    tp = match_predictions(gt, np.array([0, 0]), pred, scores, classes)
    # A (0.9) takes ground truth A first; near_a (0.5) finds it taken -> duplicate, FP.
    # B at 0.8 has the wrong class -> FP; B at 0.7 matches.
    assert tp.tolist() == [False, True, False, True]


def test_best_f1_point_keeps_tied_scores_together():
    # Two predictions share score 0.8 (one TP, one FP); a threshold cannot split them.
    scores = np.array([0.9, 0.8, 0.8])
    tp = np.array([True, True, False])
    point = best_f1_point(scores, np.zeros(3, dtype=int), tp, np.array([2]))
    # At 0.9: P=1, R=1/2, F1=2/3. At 0.8: P=2/3, R=1, F1=4/5.
    assert point.conf == 0.8
    assert point.precision[0] == pytest.approx(2 / 3) and point.recall[0] == 1.0
    assert point.mean_f1 == pytest.approx(0.8)


def test_real_labels_scored_against_themselves():
    """Ground truth from seed_balls as predictions: all found -> 1; keep k of n -> hand value."""
    root = shared_dir() / "data" / "seed_balls"
    if not (root / "labels").is_dir():
        pytest.skip(f"shared data not found at {root} (set MHYOLO_SHARED)")
    images = sorted((root / "images").iterdir())[::7][:30]
    results = []
    for image_path in images:
        labels, issues = read_labels(root / "labels" / f"{image_path.stem}.txt", nc=3)
        assert not issues, issues
        h, w = cv2.imread(str(image_path)).shape[:2]
        cx, cy, bw, bh = labels[:, 1] * w, labels[:, 2] * h, labels[:, 3] * w, labels[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        results.append((boxes, labels[:, 0].astype(int), w, h, image_path.name))
    n = sum(len(b) for b, *_ in results)
    assert n >= 30

    def run(keep_every: int) -> tuple[float, int]:
        ev = DetectionEvaluator(NAMES, class_agnostic=True)
        kept = 0
        for i, (boxes, classes, w, h, name) in enumerate(results):
            keep = slice(None) if i % keep_every == 0 else slice(0, 0)
            kept += len(boxes[keep])
            ev.add(ImageResult(boxes, classes, boxes[keep], np.full(len(boxes[keep]), 0.9),
                               classes[keep], w, h, name))
        return ev.compute().map50_95, kept

    full, kept = run(1)
    assert full == pytest.approx(1.0) and kept == n
    half, kept = run(2)
    # Precision is 1 up to recall kept/n and nothing after: AP = #{t in 0..1 step .01 : t <= kept/n} / 101.
    recall = kept / n
    expected = sum(1 for i in range(101) if i / 100 <= recall + 1e-12) / 101
    assert 0 < recall < 1
    assert half == pytest.approx(expected, abs=1e-6)


def test_confusion_matrix_and_report_on_hand_made_labels():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    cm = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0],
                                       [0, 1, 1],
                                       [1, 0, 3]])
    report = classification_report(y_true, y_pred, NAMES)
    assert report["accuracy"] == pytest.approx(6 / 9)
    np.testing.assert_array_equal(report["confusion_matrix"], cm)
    basket = report["per_class"]["basketball"]
    # basketball: 2 right of 3 true, 2 right of 3 predicted.
    assert basket == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                      "f1": pytest.approx(2 / 3), "support": 3}
    football = report["per_class"]["football"]  # 1 right of 2 true, 1 right of 2 predicted
    assert football["precision"] == pytest.approx(0.5) and football["recall"] == pytest.approx(0.5)
    tennis = report["per_class"]["tennis-ball"]  # 3 of 4 true, 3 of 4 predicted
    assert tennis["precision"] == pytest.approx(0.75) and tennis["support"] == 4
    assert report["macro"]["f1"] == pytest.approx((2 / 3 + 0.5 + 0.75) / 3)


def test_report_class_never_predicted_and_bad_input():
    report = classification_report([0, 1, 1], [0, 0, 0], ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert report["per_class"]["a"]["precision"] == pytest.approx(1 / 3)
    assert report["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="y_pred has 2"):
        classification_report([0, 1, 1], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="class id 2"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="no samples"):
        classification_report([], [], ["a"])
