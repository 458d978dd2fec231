"""Segmentation labels and masks: polygons read and checked line by line, rasterised and traced back,
ellipses inscribed in boxes, and COCO mask AP against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mhyolo.data.segments import (Segment, box_segments, ellipse_polygon, mask_polygon, polygon_mask,
                                  read_segments, write_segments)
from mhyolo.eval.mask_metrics import MaskEvaluator, MaskImageResult


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels" / "a.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_good_polygons_are_read_and_give_their_boxes(tmp_path: Path) -> None:
    path = _file(tmp_path, "0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n\n2 0.3 0.3 0.9 0.3 0.6 0.8\n")
    segments, issues = read_segments(path, nc=3)
    assert issues == []
    assert [s.cls for s in segments] == [0, 2]
    np.testing.assert_allclose(segments[0].box(), [0, 0.3, 0.4, 0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(segments[1].box(), [2, 0.6, 0.55, 0.6, 0.5], atol=1e-6)
    write_segments(tmp_path / "copy.txt", segments)
    again, _ = read_segments(tmp_path / "copy.txt")
    np.testing.assert_allclose(again[1].points, segments[1].points, atol=1e-6)


def test_bad_polygons_are_named_by_file_and_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "\n".join([
        "0 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9",  # 1: good
        "0 0.1 0.1 0.9 0.9 0.9 0.1 0.1 0.9",  # 2: a bow tie, crossing itself
        "0 0.1 0.1",  # 3: one point
        "0 0.5 0.5 0.2 0.2",  # 4: a box line (class and four numbers) among polygons
        "0 0.1 0.1 0.5 0.5 0.9 0.1 0.3",  # 5: odd number of coordinates
        "1 0.1 0.1 1.2 0.1 0.5 0.5",  # 6: outside [0, 1]
        "7 0.1 0.1 0.9 0.1 0.5 0.5",  # 7: class out of range
        "0 0.1 0.1 0.2 0.2 0.3 0.3",  # 8: collinear: zero area
        "0 0.1 x 0.9 0.1 0.5 0.5",  # 9: not a number
    ]))
    segments, issues = read_segments(path, nc=2)
    assert len(segments) == 1
    found = {issue.line: issue.reason for issue in issues}
    assert sorted(found) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "self-intersection" in found[2]
    assert "at least 3 points" in found[3]
    assert "a box line" in found[4]
    assert "odd number" in found[5]
    assert "outside [0, 1]" in found[6]
    assert "out of range" in found[7]
    assert "zero area" in found[8]
    assert "not a number" in found[9]
    assert str(issues[0]).startswith(f"{path}:2: ")


def test_a_polygon_among_box_lines_is_named(tmp_path: Path) -> None:
    path = _file(tmp_path, "0 0.5 0.5 0.2 0.2\n0 0.4 0.4 0.1 0.1\n0 0.1 0.1 0.9 0.1 0.5 0.5\n")
    segments, issues = read_segments(path)
    assert segments == [] and [(i.line, "a polygon line" in i.reason) for i in issues] == [(3, True)]


def test_a_missing_file_is_an_image_without_objects(tmp_path: Path) -> None:
    assert read_segments(tmp_path / "none.txt") == ([], [])


@pytest.mark.parametrize("points, area", [
    ([(20, 30), (220, 30), (220, 130), (20, 130)], 200 * 100),  # a rectangle
    ([(10, 10), (210, 10), (10, 160)], 200 * 150 / 2),  # a right triangle
])
def test_rasterised_area_is_the_polygon_area_within_its_outline(points: list, area: float) -> None:
    polygon = np.array(points, np.float32)
    mask = polygon_mask(polygon, (200, 240))
    perimeter = float(np.linalg.norm(np.roll(polygon, -1, axis=0) - polygon, axis=1).sum())
    assert abs(mask.sum() - area) <= perimeter / 2 + 4  # OpenCV fills the edge pixels too
    traced = polygon_mask(mask_polygon(mask), mask.shape)
    assert (traced & mask).sum() / (traced | mask).sum() > 0.98  # traced back to the same region


def test_the_ellipse_in_a_box_has_area_pi_w_h_over_4() -> None:
    box = np.array([160.0, 100.0, 120.0, 80.0])  # cx, cy, w, h in pixels
    mask = polygon_mask(ellipse_polygon(box), (200, 320))
    expected = math.pi * 120 * 80 / 4
    assert abs(mask.sum() - expected) / expected < 0.03  # the rasterisation error of a 317-px outline
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (100, 220, 60, 140)  # it touches the box's sides


def test_boxes_become_ellipses_with_the_same_box() -> None:
    labels = np.array([[1, 0.5, 0.4, 0.2, 0.3], [0, 0.1, 0.1, 0.05, 0.05]], np.float32)
    segments = box_segments(labels)
    assert [s.cls for s in segments] == [1, 0]
    for segment, row in zip(segments, labels):
        np.testing.assert_allclose(segment.box(), row, atol=1e-6)


def _block(shape: tuple[int, int], y: slice, x: slice) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y, x] = True
    return mask


def test_mask_ap_against_a_hand_computed_value() -> None:
    """Image 1: an exact mask (0.9) and a false one (0.8); image 2: a mask of IoU 0.625 (0.7). At IoU 0.50,
    0.55, 0.60 the ranked TP/FP/TP gives AP (51 + 50 x 2/3) / 101; above, TP/FP/FP gives 51 / 101."""
    shape = (100, 100)
    a = _block(shape, slice(10, 40), slice(10, 40))
    b = _block(shape, slice(50, 90), slice(50, 90))  # 1,600 px
    inside_b = _block(shape, slice(50, 90), slice(50, 75))  # 1,000 px of it: IoU 0.625
    elsewhere = _block(shape, slice(60, 90), slice(0, 20))
    for names in (["ball"], ["ball", "player"]):  # a class without ground truth changes nothing
        evaluator = MaskEvaluator(names)
        evaluator.add(MaskImageResult(a[None], [0], np.stack([a, elsewhere]), [0.9, 0.8], [0, 0], "one"))
        evaluator.add(MaskImageResult(b[None], [0], inside_b[None], [0.7], [0], "two"))
        metrics = evaluator.compute()
        high, low = (51 + 50 * 2 / 3) / 101, 51 / 101
        assert metrics.map50 == pytest.approx(high, abs=1e-6)
        assert metrics.map50_95 == pytest.approx((3 * high + 7 * low) / 10, abs=1e-6)
        assert metrics.masks == 2 and metrics.images == 2
        if len(names) == 2:
            assert math.isnan(metrics.per_class_ap50[1])


def test_mask_results_refuse_what_does_not_line_up() -> None:
    shape = (10, 10)
    with pytest.raises(ValueError, match="classes"):
        MaskImageResult(np.zeros((2, *shape)), [0], np.zeros((0, *shape)), [], [], "x.jpg")
    with pytest.raises(Exception, match="x.jpg: masks of different image sizes"):
        MaskImageResult(np.zeros((1, *shape)), [0], np.zeros((1, 5, 5)), [0.5], [0], "x.jpg")
    evaluator = MaskEvaluator(["ball"])
    with pytest.raises(Exception, match="out of range"):
        evaluator.add(MaskImageResult(np.zeros((1, *shape)), [3], np.zeros((0, *shape)), [], [], "x.jpg"))


def test_segments_are_frozen_records() -> None:
    segment = Segment(0, np.zeros((3, 2), np.float32))
    with pytest.raises(AttributeError):
        segment.cls = 1  # type: ignore[misc]


def test_a_segmentation_export_trains_as_boxes(tmp_path: Path) -> None:
    """`read_labels` (what every detection reader uses) takes each polygon's box from a file of polygons,
    names its bad polygons by line, and keeps naming a polygon among box lines as before."""
    from mhyolo.data.labels import read_labels

    path = _file(tmp_path, "0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n1 0.1 0.1 0.9 0.9 0.9 0.1 0.1 0.9\n"
                           "1 0.6 0.6 0.9 0.6 0.8 0.9\n")
    boxes, issues = read_labels(path, nc=2)
    np.testing.assert_allclose(boxes, [[0, 0.3, 0.4, 0.4, 0.4], [1, 0.75, 0.75, 0.3, 0.3]], atol=1e-6)
    assert [(i.line, "self-intersection" in i.reason) for i in issues] == [(2, True)]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.1 0.3 0.3\n")
    boxes, issues = read_labels(mixed)
    assert boxes.shape == (1, 5) and [(i.line, "polygon" in i.reason) for i in issues] == [(2, True)]
