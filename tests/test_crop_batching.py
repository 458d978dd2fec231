"""Crop batching of the two-stage model: an image's crops classified in one call (or in a fixed-batch graph's
chunks) type each box as classifying its crop alone does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from test_two_stage import BALLS, SIDE, TYPE_NAMES, SpyClassifier, _classifier_file, painted  # noqa: F401


def _many_boxes(seed: int, count: int) -> np.ndarray:
    """`count` boxes of assorted sizes over a SIDE x SIDE image, some leaving it."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-20, SIDE - 10, (count, 2))
    wh = rng.uniform(4, 90, (count, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_an_images_crops_in_one_call_type_each_box_as_one_crop_at_a_time(painted: Path, tmp_path: Path) -> None:
    from mhyolo.classify.backend import load_classifier
    from mhyolo.infer.crop_types import classify_crops
    from mhyolo.infer.crops import crop_boxes
    from mhyolo.infer.crop_types import to_input
    from mhyolo.infer.crop_types import CropClassifierTypes
    from mhyolo.infer.types import ImageBatch

    classifier = load_classifier(_classifier_file(tmp_path, TYPE_NAMES))
    images = [cv2.imread(str(painted.parent / "images" / "val" / name)) for name in BALLS]
    boxes = [_many_boxes(0, 23), _many_boxes(1, 9)]
    alone = []  # the reference: every crop classified by itself, a batch of one
    for image, image_boxes in zip(images, boxes):
        probs = np.concatenate([classifier.probabilities(to_input(crop_boxes(image, box[None], 64)[..., ::-1]))
                                for box in image_boxes])
        alone.append(probs)
    # any batch (forward passes of 64 crops, or of 5), and a graph that takes exactly four crops a call
    for fixed, pass_size in ((None, 64), (None, 5), (4, 64)):
        classifier.pass_size = pass_size
        spy = SpyClassifier(classifier, fixed_batch=fixed)
        types = CropClassifierTypes(spy).assign({}, [None, None], ImageBatch(boxes=boxes, originals=lambda: images))
        assert spy.calls == ([23, 9] if fixed is None else [4] * 6 + [4] * 3)
        for got, probs in zip(types, alone):
            np.testing.assert_array_equal(got.ids, probs.argmax(axis=1))
            np.testing.assert_allclose(got.scores, probs.max(axis=1), atol=1e-5)
        crops = crop_boxes(images[0], boxes[0], 64)[..., ::-1]
        np.testing.assert_allclose(classify_crops(spy, crops, batch=5), alone[0], atol=1e-5)
