"""Plots: each writes a readable PNG of the documented size and refuses inconsistent input."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from mhyolo.errors import DataError
from mhyolo.eval.metrics import DetectionEvaluator, ImageResult
from mhyolo.eval.plots import (
    GT_COLOR,
    draw_boxes,
    plot_confusion_matrix,
    plot_image_grid,
    plot_pr_curve,
    plot_training_curves,
)

NAMES = ["basketball", "football", "tennis-ball"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert cv2.imread(str(path)) is not None, f"{path} does not decode"
    return width, height


def metrics(agnostic: bool = False):
    ev = DetectionEvaluator(NAMES, class_agnostic=agnostic)
    ev.add(ImageResult(np.array([[10, 10, 60, 60], [100, 100, 150, 150]]), np.array([0, 1]),
                       np.array([[10, 10, 60, 60], [200, 10, 230, 40], [100, 100, 150, 150]]),
                       np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]), 320, 240, "a.jpg"))
    return ev.compute()


@pytest.mark.parametrize("agnostic", [False, True])
def test_pr_curve_png(tmp_path, agnostic):
    out = plot_pr_curve(metrics(agnostic), tmp_path / "sub" / "pr.png")
    assert out == tmp_path / "sub" / "pr.png"
    assert png_size(out) == (900, 600)


def test_confusion_matrix_png_and_shape_checks(tmp_path):
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    out = plot_confusion_matrix(cm, NAMES, tmp_path / "cm.png")
    assert png_size(out) == (1400, 600)
    # A class with no samples (all-zero row) must not break the row normalisation.
    assert png_size(plot_confusion_matrix(np.zeros((3, 3)), NAMES, tmp_path / "zero.png")) == (1400, 600)
    with pytest.raises(ValueError, match="3 names"):
        plot_confusion_matrix(np.eye(2), NAMES, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((3, 2)), NAMES, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_training_curves_from_results_csv(tmp_path):
    csv_path = tmp_path / "results.csv"
    # Padded headers as YOLOv5 writes them; an empty cell (metric not computed) is allowed.
    csv_path.write_text(
        "      epoch,  train/box_loss,  train/obj_loss,  train/cls_loss,"
        "  metrics/mAP_0.5,  metrics/mAP_0.5:0.95,  x/lr0\n"
        "0, 0.10, 0.20, 0.03, 0.30, 0.10, 0.010\n"
        "1, 0.08, 0.15, 0.02, , , 0.009\n"
        "2, 0.07, 0.12, 0.02, 0.45, 0.20, 0.008\n"
    )
    out = plot_training_curves(csv_path)
    assert out == tmp_path / "results.png"
    # 6 curves, 5 per row of 300x250 px -> 2 rows of 5.
    assert png_size(out) == (1500, 500)
    # Without an epoch column every column is plotted against the row number.
    plain = tmp_path / "plain.csv"
    plain.write_text("loss,lr\n1.0,0.1\n0.5,0.05\n")
    assert png_size(plot_training_curves(plain, tmp_path / "plain.png")) == (600, 250)


def test_training_curves_bad_csv_names_file_and_line(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_text("epoch,loss\n0,1.0\n1,oops\n")
    with pytest.raises(DataError, match=r"results\.csv:3: column 'loss': 'oops'"):
        plot_training_curves(bad)
    bad.write_text("epoch,loss\n0,1.0,7\n")
    with pytest.raises(DataError, match=r"results\.csv:2: 3 fields"):
        plot_training_curves(bad)
    bad.write_text("epoch,loss\n")
    with pytest.raises(DataError, match="no data rows"):
        plot_training_curves(bad)
    with pytest.raises(DataError, match="cannot read"):
        plot_training_curves(tmp_path / "missing.csv")


def test_draw_boxes_draws_on_a_copy():
    image = np.zeros((100, 120, 3), np.uint8)
    out = draw_boxes(image, np.array([[20, 30, 80, 90]]), np.array([1]), NAMES, color=GT_COLOR)
    assert image.max() == 0  # input untouched
    assert tuple(out[60, 20]) == GT_COLOR  # left edge, below the label
    assert tuple(out[90, 50]) == GT_COLOR  # bottom edge
    assert out[60, 50].max() == 0  # inside the box stays as it was
    with pytest.raises(ValueError, match="2 scores"):
        draw_boxes(image, np.array([[0, 0, 5, 5]]), np.array([0]), NAMES, scores=np.array([0.1, 0.2]))


def test_image_grid_layout_and_checks(tmp_path):
    image = np.full((240, 320, 3), 60, np.uint8)
    res = ImageResult(np.array([[10, 10, 100, 100]]), np.array([0]),
                      np.array([[12, 12, 98, 105]]), np.array([0.9]), np.array([2]), 320, 240, "x.jpg")
    out = plot_image_grid([image] * 3, [res] * 3, NAMES, tmp_path / "grid.png", tile=160, columns=2)
    assert png_size(out) == (2 * 2 * 160, 2 * 160)
    grid = cv2.imread(str(out))
    # Panels are downscaled, so look for green-dominated pixels rather than the exact colour.
    b, g, r = (grid[..., i].astype(int) for i in range(3))
    green = g - np.maximum(b, r) > 50
    # Ground-truth boxes appear only in ground-truth panels (panel columns 0 and 2).
    assert green[:, :160].any() and green[:, 320:480].any()
    assert not green[:, 160:320].any() and not green[:, 480:].any()
    # Last slot of the second row is unused and stays white.
    assert (grid[160:, 320:] == 255).all()

    with pytest.raises(ValueError, match="does not match"):
        plot_image_grid([np.zeros((100, 100, 3), np.uint8)], [res], NAMES, tmp_path / "g.png")
    with pytest.raises(ValueError, match="2 images but 1 results"):
        plot_image_grid([image, image], [res], NAMES, tmp_path / "g.png")
    with pytest.raises(ValueError, match="uint8"):
        plot_image_grid([image.astype(np.float32)], [res], NAMES, tmp_path / "g.png")
