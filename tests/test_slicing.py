"""Sliced and rectangular inference, on synthetic images and a backend that finds white blobs.

`BlobBackend` is a real detector of a trivial kind: every white blob of the input at least
`min_side` input pixels wide and tall becomes one detection. It makes the geometry of
tiling, merging and letterboxing checkable to the pixel, independently of any trained model.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
import torch

from mhyolo.commands.inference_args import slice_settings
from mhyolo.errors import ConfigError
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.slicing import SlicedPredictor, SliceSettings, greedy_merge, tile_windows


class BlobBackend:
    names = ["ball"]
    stride = torch.tensor([8.0, 16.0, 32.0])

    def __init__(self, min_side: int = 4) -> None:
        self.min_side = min_side
        self.shapes: list[tuple[int, int]] = []

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        rows = []
        for image in x:
            self.shapes.append(tuple(image.shape[-2:]))
            white = (image.min(dim=0).values > 0.9).numpy().astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(white)
            found = [[s[0] + s[2] / 2, s[1] + s[3] / 2, s[2], s[3], 0.9, 1.0] for s in stats[1:count]
                     if s[2] >= self.min_side and s[3] >= self.min_side]
            rows.append(torch.tensor(found + [[0.0] * 6] * (4 - len(found)), dtype=torch.float32)[:4])
        return {"detection": torch.stack(rows)}


def _image(height: int, width: int, squares: list[tuple[int, int, int, int]]) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    for x0, y0, x1, y1 in squares:
        image[y0:y1, x0:x1] = 255
    return image


def test_tiles_cover_the_image_with_the_asked_overlap() -> None:
    windows = tile_windows(720, 1280, 320, 0.2)
    xs = sorted({w[0] for w in windows})
    ys = sorted({w[1] for w in windows})
    assert xs[0] == 0 and xs[-1] + 320 == 1280 and ys[0] == 0 and ys[-1] + 320 == 720
    assert all(b - a <= 256 for a, b in zip(xs, xs[1:]))  # step = 320 * (1 - 0.2)
    assert all(x1 - x0 == 320 and y1 - y0 == 320 for x0, y0, x1, y1 in windows)
    covered = np.zeros((720, 1280), bool)
    for x0, y0, x1, y1 in windows:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tile_windows(200, 300, 320, 0.2) == [(0, 0, 300, 200)]


def test_a_box_across_a_tile_border_comes_back_once_in_place() -> None:
    # tiles of 320 with overlap 0.25 start at x = 0, 240, 480, ...: the square spans 305..345,
    # cut by the first tile's right edge (320) and whole in the second tile
    square = (305, 100, 345, 140)
    image = _image(480, 960, [square])
    sliced = SlicedPredictor(Predictor(BlobBackend(), imgsz=320, conf=0.25), SliceSettings(size=320, overlap=0.25))
    (prediction,) = sliced.predict([image])
    assert len(prediction) == 1
    np.testing.assert_allclose(prediction.boxes[0], square, atol=1.5)
    # SAHI's greedy merge gets there too, by growing the cut copy's box to the whole one
    nmm = SlicedPredictor(Predictor(BlobBackend(), imgsz=320, conf=0.25),
                          SliceSettings(size=320, overlap=0.25, merge="nmm"))
    (merged,) = nmm.predict([image])
    assert len(merged) == 1
    np.testing.assert_allclose(merged.boxes[0], square, atol=1.5)


def test_boxes_cut_by_an_inner_tile_edge_are_dropped_and_the_rest_shifted() -> None:
    from mhyolo.infer.predictor import Prediction
    from mhyolo.infer.slicing import place_tile

    boxes = np.array([[0, 10, 20, 30],      # touches the tile's left edge: inner (x0 > 0), cut
                      [50, 50, 70, 70],     # inside
                      [300, 10, 320, 30],   # touches the right edge, which is the image's: kept
                      [40, 300, 60, 320]],  # touches the bottom edge, an inner one: cut
                     np.float32)
    tile = Prediction(boxes=boxes, scores=np.full(4, 0.9, np.float32), class_ids=np.zeros(4, np.int64),
                      class_names=["ball"] * 4, image_shape=(320, 320))
    placed = place_tile(tile, (640, 0, 960, 320), (720, 960))
    np.testing.assert_allclose(placed.boxes, [[690, 50, 710, 70], [940, 10, 960, 30]])
    assert placed.image_shape == (720, 960) and placed.class_names == ["ball", "ball"]


def test_a_small_object_invisible_to_the_whole_image_is_found_with_slicing() -> None:
    # 10 px in a 1280x720 frame is 2.5 px at 320 (below the backend's 4 px), 12.5 px in a 256 tile
    square = (700, 400, 710, 410)
    image = _image(720, 1280, [square])
    predictor = Predictor(BlobBackend(min_side=4), imgsz=320, conf=0.25)
    assert len(predictor.predict([image])[0]) == 0
    sliced = SlicedPredictor(predictor, SliceSettings(size=256, overlap=0.2))
    (prediction,) = sliced.predict([image])
    assert len(prediction) == 1
    np.testing.assert_allclose(prediction.boxes[0], square, atol=1.0)
    assert sliced.calls_per_image(image) == len(tile_windows(720, 1280, 256, 0.2)) + 1


def test_greedy_merge_keeps_the_best_box_grown_to_what_it_absorbed() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 12, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.5, 0.8, 0.7], np.float32)
    keep, merged = greedy_merge(boxes, scores, np.array([0, 0, 0, 1]), match=0.5)
    assert keep.tolist() == [0, 2, 3]  # box 3 is of another class: not absorbed
    np.testing.assert_allclose(merged[0], [0, 0, 12, 10])
    np.testing.assert_allclose(merged[1], boxes[2])


@pytest.mark.parametrize("size, overlap, match", [(16, 0.2, "stride"), (320, 0.9, r"\[0, 0.9\)"),
                                                  (320, -0.1, r"\[0, 0.9\)")])
def test_bad_slice_settings_are_refused(size: int, overlap: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SlicedPredictor(Predictor(BlobBackend(), imgsz=320), SliceSettings(size=size, overlap=overlap))
    args = argparse.Namespace(slice=size, slice_overlap=overlap)
    if size >= 32:
        with pytest.raises(ConfigError, match=match):
            slice_settings(args)


def test_a_tile_larger_than_the_image_is_refused() -> None:
    sliced = SlicedPredictor(Predictor(BlobBackend(), imgsz=320), SliceSettings(size=800))
    with pytest.raises(ConfigError, match="larger than the image"):
        sliced.predict([_image(480, 640, [])])


def test_rectangular_letterbox_round_trip_on_a_16_9_image() -> None:
    square = (1000, 500, 1100, 600)
    image = _image(720, 1280, [square])
    backend = BlobBackend()
    rect = Predictor(backend, imgsz=320, conf=0.25, rect=True)
    (prediction,) = rect.predict([image])
    assert backend.shapes[-1] == (192, 320)  # 180 rows padded to the stride (32), not to 320
    assert prediction.image_shape == (720, 1280)
    np.testing.assert_allclose(prediction.boxes[0], square, atol=4.0)  # 1 input px = 4 original px
    square_predictor = Predictor(backend, imgsz=320, conf=0.25)
    (same,) = square_predictor.predict([image])
    assert backend.shapes[-1] == (320, 320)
    np.testing.assert_allclose(same.boxes[0], square, atol=4.0)


def test_rectangular_batches_of_mixed_shapes_map_back_each_image() -> None:
    wide = _image(720, 1280, [(1000, 500, 1100, 600)])
    tall = _image(1280, 720, [(100, 1000, 200, 1100)])
    backend = BlobBackend()
    predictions = Predictor(backend, imgsz=320, conf=0.25, rect=True, batch_size=2).predict([wide, tall])
    np.testing.assert_allclose(predictions[0].boxes[0], (1000, 500, 1100, 600), atol=4.0)
    np.testing.assert_allclose(predictions[1].boxes[0], (100, 1000, 200, 1100), atol=4.0)


def test_a_fixed_input_graph_falls_back_to_square_and_says_so() -> None:
    backend = BlobBackend()
    backend.imgsz = 320  # what exported backends carry
    predictor = Predictor(backend, imgsz=320, rect=True)
    assert not predictor.rect and predictor.square_fallback
    predictor.predict([_image(720, 1280, [])])
    assert backend.shapes[-1] == (320, 320)
