"""Scores per ball size: hand-made boxes at known pixel sizes land in COCO's area ranges for our
bins, with APs worked out from the 101-point definition; the all-size scores stay COCO's own;
every place that shows scores shows the bins, a bin without balls as a dash; a crossval folder
scored before the bins existed is scored again (not trained again) to gain them.

AP by the 101-point definition (as in test_metrics.py): detections sorted by score, precision
and recall after each, precision made non-increasing from the right, then averaged over the
recall thresholds 0, 0.01, ..., 1 (0 at a threshold no detection reaches).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster

from mhyolo.cli import main
from mhyolo.eval.metrics import DetectionEvaluator, ImageResult
from mhyolo.eval.size_bins import SIZE_BINS, bin_cell, bin_cells
from mhyolo.pipeline.crossval import sizes_to_score
from mhyolo.pipeline.crossval_report import mean_bins, write_crossval_report
from mhyolo.pipeline.report import write_report
from mhyolo.pipeline.run_report import RunReport
from mhyolo.report import write_html_report

DASH = "–"


def ap_101(hits: list[bool], n_gt: int) -> float:
    """AP of detections already sorted by score (True: a true positive), by the definition above."""
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / n_gt
    interpolated = np.maximum.accumulate(precision[::-1])[::-1]
    total = 0.0
    for t in np.linspace(0, 1, 101):
        reached = np.flatnonzero(recall >= t)
        total += interpolated[reached[0]] if len(reached) else 0.0
    return total / 101


def box(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


# One 640 x 640 image. Ground truth: two tiny balls (10 x 10, one never found), one small ball
# 10 x 40 (sqrt(area) = 20: small, though its long side is 40), one medium 50 x 50; no large ball.
T1, T2, S1, M1 = box(10, 10, 10, 10), box(100, 10, 10, 10), box(10, 100, 10, 40), box(200, 200, 50, 50)
# Predictions, best first: a large false positive, the medium ball, a small false positive
# (12 x 48, sqrt 24), the found tiny ball, the small ball, a tiny false positive (8 x 8), a medium
# false positive (40 x 40).
PREDICTIONS = [(box(400, 400, 200, 200), 0.99, False), (M1, 0.95, True), (box(300, 10, 12, 48), 0.9, False),
               (T1, 0.6, True), (S1, 0.5, True), (box(500, 10, 8, 8), 0.3, False), (box(10, 300, 40, 40), 0.2, False)]


def hand_made() -> DetectionEvaluator:
    evaluator = DetectionEvaluator(["ball"])
    pred = [p for p, _, _ in PREDICTIONS]
    evaluator.add(ImageResult(np.array([T1, T2, S1, M1]), np.zeros(4, int), np.array(pred),
                              np.array([s for _, s, _ in PREDICTIONS]), np.zeros(len(pred), int), 640, 640, "a.jpg"))
    return evaluator


def test_the_bins_are_cocos_area_ranges_with_a_tiny_bin() -> None:
    assert [b.name for b in SIZE_BINS] == ["tiny", "small", "medium", "large"]
    assert [b.area_range for b in SIZE_BINS] == [[0, 16 ** 2], [16 ** 2, 32 ** 2], [32 ** 2, 96 ** 2],
                                                 [96 ** 2, 1e5 ** 2]]
    assert all(a.high == b.low for a, b in zip(SIZE_BINS, SIZE_BINS[1:]))  # no gap between bins


def test_hand_made_boxes_land_in_their_bins_with_hand_computed_ap() -> None:
    m = hand_made().compute()
    bins = {b.name: b for b in m.size_bins}
    assert [b.name for b in m.size_bins] == [b.name for b in SIZE_BINS]
    assert {name: b.boxes for name, b in bins.items()} == {"tiny": 2, "small": 1, "medium": 1, "large": 0}

    # tiny: only the tiny detections count (the others are outside the range and unmatched):
    # T1 (TP) then the 8 x 8 FP; T2 is never found. Recall 1/2 reached at precision 1: 51 thresholds.
    assert ap_101([True, False], 2) == pytest.approx(51 / 101)
    assert bins["tiny"].map50 == pytest.approx(51 / 101, abs=1e-9)
    # small: the 12 x 48 FP ranked before S1 (TP): precision 1/2 at recall 1, at every threshold.
    assert ap_101([False, True], 1) == pytest.approx(0.5)
    assert bins["small"].map50 == pytest.approx(0.5, abs=1e-9)
    # medium: M1 first (TP), the 40 x 40 FP after it changes nothing.
    assert bins["medium"].map50 == pytest.approx(1.0, abs=1e-9)
    # every box is exact, so each IoU threshold agrees: mAP50-95 = mAP50
    for name in ("tiny", "small", "medium"):
        assert bins[name].map50_95 == pytest.approx(bins[name].map50, abs=1e-9), name
    # large: no ground truth, so no score (its false positive does not make it 0)
    assert math.isnan(bins["large"].map50) and math.isnan(bins["large"].map50_95)

    # all sizes: every detection in score order against the 4 balls
    expected = ap_101([hit for _, _, hit in PREDICTIONS], 4)
    assert expected == pytest.approx(76 * 0.6 / 101)  # precision 3/5 up to recall 3/4
    assert m.map50 == pytest.approx(expected, abs=1e-9) and m.boxes == 4


def test_a_bin_without_balls_is_none_and_shown_as_a_dash() -> None:
    m = hand_made().compute()
    stored = m.to_dict()["size_bins"]
    assert stored["large"] == {"map50": None, "map50_95": None, "boxes": 0}
    assert stored["tiny"]["map50"] == pytest.approx(51 / 101) and stored["tiny"]["boxes"] == 2
    assert json.loads(json.dumps(stored)) == stored  # plain data
    large_row = m.size_table().splitlines()[-1]
    assert large_row.split() == ["large", "(>", "96", "px)", "0", DASH, DASH]
    assert bin_cell(stored["large"]) == f"{DASH} (0)" and bin_cell(stored["small"], detail=True) == "0.500 / 0.500 (1)"
    assert bin_cells(None) == [DASH] * len(SIZE_BINS)  # a score stored before the bins existed
    # the mean over folds leaves a fold without balls of a size out instead of counting it as 0
    other = {**stored, "tiny": {"map50": None, "map50_95": None, "boxes": 0}}
    mean = mean_bins([{"size_bins": stored}, {"size_bins": other}, {"map50": 0.1}])
    assert mean["tiny"] == {"boxes": 2, "map50": pytest.approx(51 / 101), "map50_95": pytest.approx(51 / 101)}
    assert mean["large"] == {"boxes": 0, "map50": None, "map50_95": None}
    assert mean_bins([{"map50": 0.1}]) == {}


def test_a_box_on_a_bin_edge_counts_in_both_bins_as_in_coco() -> None:
    evaluator = DetectionEvaluator(["ball"])
    edge = box(0, 0, 32, 32)  # area exactly 32 ** 2: COCO's small and medium both hold it
    evaluator.add(ImageResult(np.array([edge]), np.zeros(1, int), np.array([edge]), np.array([0.9]),
                              np.zeros(1, int), 100, 100))
    bins = {b.name: b for b in evaluator.compute().size_bins}
    assert (bins["small"].boxes, bins["medium"].boxes) == (1, 1)
    assert bins["small"].map50 == bins["medium"].map50 == pytest.approx(1.0)
    assert bins["tiny"].boxes == bins["large"].boxes == 0


def _random_results(seed: int, classes: int) -> list[ImageResult]:
    rng = np.random.default_rng(seed)
    results = []
    for i in range(40):
        n = int(rng.integers(0, 6))
        side = np.exp(rng.uniform(np.log(4), np.log(300), n))
        xy = rng.uniform(0, 600, (n, 2))
        gt = np.concatenate([xy, xy + side[:, None] * rng.uniform(0.7, 1.3, (n, 2))], axis=1)
        found = gt[rng.random(n) < 0.8]
        found = found + rng.normal(0, 2, found.shape)
        found[:, 2:] = np.maximum(found[:, 2:], found[:, :2] + 1)
        m = int(rng.integers(0, 4))
        fxy = rng.uniform(0, 600, (m, 2))
        false = np.concatenate([fxy, fxy + np.exp(rng.uniform(np.log(4), np.log(300), (m, 1)))], axis=1)
        pred = np.concatenate([found, false])
        results.append(ImageResult(gt, rng.integers(0, classes, n), pred, rng.random(len(pred)),
                                   rng.integers(0, classes, len(pred)), 640, 640, f"{i}.jpg"))
    return results


def _plain_coco(evaluator: DetectionEvaluator) -> np.ndarray:
    """COCO's precision with its own default area ranges (all, small, medium, large), nothing of ours."""
    gt, detections = evaluator._coco_dicts()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt, print_function=lambda *a, **k: None)
        coco_eval = COCOeval_faster(coco_gt, coco_gt.loadRes(detections), iouType="bbox",
                                    print_function=lambda *a, **k: None)
        coco_eval.evaluate()
        coco_eval.accumulate()
    assert coco_eval.params.areaRngLbl == ["all", "small", "medium", "large"]
    return np.asarray(coco_eval.eval["precision"])[..., -1]  # 100 detections per image


@pytest.mark.parametrize("classes", [1, 3])
def test_all_sizes_are_unchanged_and_medium_large_are_cocos(classes: int) -> None:
    evaluator = DetectionEvaluator(["a", "b", "c"][:classes])
    for result in _random_results(classes, classes):
        evaluator.add(result)
    m = evaluator.compute()
    plain = _plain_coco(evaluator)  # (T, R, K, areas)

    def mean_ap(precision: np.ndarray) -> tuple[float, float]:
        """mAP50 and mAP50-95 over the classes COCO scored (-1: no ground truth in the range)."""
        scored = (precision > -1).all(axis=(0, 1))
        ap50 = np.where(scored, precision[0].mean(axis=0), np.nan)
        ap50_95 = np.where(scored, precision.mean(axis=(0, 1)), np.nan)
        return float(np.nanmean(ap50)), float(np.nanmean(ap50_95))

    # the all-size numbers are exactly those of COCO's run without our ranges
    assert (m.map50, m.map50_95) == mean_ap(plain[..., 0])
    np.testing.assert_array_equal(m.pr_precision, plain[0, :, :, 0].T)
    # our medium and large bins are COCO's medium and large
    bins = {b.name: b for b in m.size_bins}
    for name, area in (("medium", 2), ("large", 3)):
        assert (bins[name].map50, bins[name].map50_95) == pytest.approx(mean_ap(plain[..., area]), abs=1e-12), name
    assert sum(b.boxes for b in m.size_bins) >= m.boxes  # every box in a bin (edges in two)


# ------------------------------------------------------------------ `mhyolo val` in original pixels
SIDES = {"tiny": 12, "small": 24, "medium": 60, "large": 150}


def test_val_bins_balls_by_their_size_in_the_original_image(tmp_path: Path, official_weights: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Scored at 64 px, every ball would be tiny or small in the letterbox (x 0.16); the bins must
    see the original 400 x 300 image's sizes."""
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    w, h = 400, 300
    for i in range(2):
        image = np.full((h, w, 3), 110, np.uint8)
        lines, x = [], 10
        for side in SIDES.values():
            cv2.circle(image, (x + side // 2, 100 + side // 2), side // 2, (30, 140, 240), -1)
            lines.append(f"{i} {(x + side / 2) / w:.8f} {(100 + side / 2) / h:.8f} {side / w:.8f} {side / h:.8f}")
            x += side + 10
        for split in ("train", "val"):
            cv2.imwrite(str(tmp_path / "images" / split / f"{i}.jpg"), image)
            (tmp_path / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    from mhyolo.model.weights import load_model

    names = load_model(official_weights).names
    data = tmp_path / "data.yaml"
    data.write_text(json.dumps({"path": ".", "train": "images/train", "val": "images/val", "names": names}))
    args = ["val", "--data", str(data), "--weights", str(official_weights), "--imgsz", "64"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {name: b["boxes"] for name, b in summary["size_bins"].items()} == {name: 2 for name in SIDES}
    assert summary["boxes"] == 8
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "ball size" in table and "tiny (< 16 px)" in table and "large (> 96 px)" in table


# ------------------------------------------------------------------ cross-validation
def test_a_finished_fold_scored_before_the_bins_is_scored_again() -> None:
    with_bins = {"map50": 0.5, "size_bins": {"tiny": {"map50": None, "map50_95": None, "boxes": 0}}}
    old = {"map50": 0.5}
    assert sizes_to_score({}, [64, 96]) == [64, 96]  # never scored
    assert sizes_to_score({"scores": {"64": with_bins, "96": with_bins}}, [64, 96]) == []  # nothing to do
    assert sizes_to_score({"scores": {"64": old}}, [64]) == [64]  # an older folder gains the bins
    assert sizes_to_score({"scores": {"64": with_bins}}, [64, 96]) == [96]  # only the missing size
    # a size stored by an earlier run with --eval-imgsz gains them too, though not asked for now
    assert sizes_to_score({"scores": {"64": with_bins, "96": old}}, [64]) == [96]


def _bins(tiny: float | None, small: float) -> dict:
    return {"tiny": {"map50": tiny, "map50_95": None if tiny is None else tiny / 2, "boxes": 0 if tiny is None else 3},
            "small": {"map50": small, "map50_95": small / 2, "boxes": 5},
            "medium": {"map50": 0.5, "map50_95": 0.25, "boxes": 7},
            "large": {"map50": None, "map50_95": None, "boxes": 0}}


def test_crossval_report_has_a_table_per_ball_size_per_fold_and_mean(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    out.mkdir()
    counts = {"train": {"images": 12}, "val": {"images": 3}, "test": {"images": 9, "negatives": 2}}
    folds = {"seed": {"counts": counts, "scores": {"64": {"map50": 0.7, "size_bins": _bins(0.4, 0.6)},
                                                   "96": {"map50": 0.5}}},  # scored before the bins
             "tennis": {"counts": counts, "scores": {"64": {"map50": 0.3, "size_bins": _bins(None, 0.2)}}}}
    summary = {"config": "p.yaml", "recipe": "recipe.yaml", "seed": 0, "imgsz": 64,
               "train": {"model": "m.yaml", "epochs": 3}, "folds": folds}
    paths = write_crossval_report(out, summary)
    stored = json.loads(paths["json"].read_text())["size_bins_mean"]
    assert stored["tiny"] == {"boxes": 3, "map50": 0.4, "map50_95": 0.2}  # the fold without tiny balls left out
    assert stored["small"]["map50"] == pytest.approx(0.4) and stored["small"]["boxes"] == 10
    assert stored["large"] == {"boxes": 0, "map50": None, "map50_95": None}

    markdown = paths["markdown"].read_text()
    at_64 = markdown[markdown.index("## Scored at 64 px"):markdown.index("## Scored at 96 px")]
    assert "tiny (< 16 px)" in at_64 and "large (> 96 px)" in at_64
    per_size = at_64[at_64.index("Per ball size at 64 px"):].splitlines()
    seed = next(line for line in per_size if line.startswith("| seed "))
    assert [c.strip() for c in seed.strip("|").split("|")] == ["seed", "0.400 / 0.200 (3)", "0.600 / 0.300 (5)",
                                                               "0.500 / 0.250 (7)", f"{DASH} / {DASH} (0)"]
    mean = next(line for line in per_size if line.startswith("| **mean**"))
    assert "**0.400 / 0.200 (3)**" in mean and "**0.400 / 0.200 (10)**" in mean
    assert "tiny (< 16 px)" not in markdown[markdown.index("## Scored at 96 px"):]  # no bins were stored there

    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    at_64 = page[page.index("Scored at 64 px"):page.index("Scored at 96 px")]
    assert '<th scope="row">seed</th><td>0.400 (3)</td><td>0.600 (5)</td><td>0.500 (7)</td><td>– (0)</td>' in at_64
    assert '<th scope="row">tennis</th><td>– (0)</td><td>0.200 (5)</td>' in at_64
    assert '<tr class="mean"><th scope="row">mean</th><td>0.400 (3)</td><td>0.400 (10)</td>' in at_64


def test_pipeline_report_shows_each_stage_per_ball_size(tmp_path: Path) -> None:
    rows = {"detector": {"map50": 0.6, "map50_95": 0.3, "size_bins": _bins(None, 0.2)},
            "multihead": {"map50": 0.8, "map50_95": 0.5, "size_bins": _bins(0.4, 0.6)},
            "older": {"map50": 0.7, "map50_95": 0.4}}  # scored before the bins: no row in their table
    _, md = write_report(tmp_path, RunReport(models=rows, imgsz=128, final_stage="multihead"))
    text = md.read_text()
    section = text[text.index("## Per ball size"):]
    assert "| multihead | 0.400 / 0.200 (3)" in section and "| detector  | – / – (0)" in section
    assert "older" not in section
    page = write_html_report(tmp_path).read_text()
    per_size = page[page.index("<h3>Per ball size</h3>"):]
    assert '<th scope="row">multihead</th><td>0.400 (3)</td><td>0.600 (5)</td><td>0.500 (7)</td><td>– (0)</td>' \
        in per_size
    assert '<th scope="row">detector</th><td>– (0)</td>' in per_size and ">older<" not in per_size
