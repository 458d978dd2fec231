"""Augmentation building blocks: config, one-warp affine+crop, mosaic, mixup, box filtering, flips."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from mhyolo.config import from_dict
from mhyolo.data.augment import AugmentConfig, Augmenter, CroppedAffine
from mhyolo.data.mosaic import mixup, mosaic4
from mhyolo.errors import ConfigError
from mhyolo.infer.preprocess import PAD_VALUE

STILL = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0,
             perspective=0.0, flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0)


def test_config_defaults_follow_the_recipe():
    cfg = AugmentConfig()
    assert (cfg.hsv_h, cfg.hsv_s, cfg.hsv_v) == (0.015, 0.7, 0.4)
    assert (cfg.degrees, cfg.translate, cfg.scale, cfg.shear, cfg.perspective) == (10.0, 0.1, 0.5, 0.0, 0.0)
    assert (cfg.flipud, cfg.fliplr, cfg.mosaic, cfg.mixup) == (0.0, 0.5, 1.0, 0.0)


def test_config_from_yaml_dict_and_bad_values():
    cfg = from_dict(AugmentConfig, {"mixup": 0.1, "degrees": 5}, "hyp.yaml")
    assert cfg.mixup == 0.1 and cfg.degrees == 5.0 and isinstance(cfg.degrees, float)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(AugmentConfig, {"mosiac": 1.0}, "hyp.yaml")
    with pytest.raises(ConfigError, match="fliplr"):
        AugmentConfig(fliplr=1.5)
    with pytest.raises(ConfigError, match="scale"):
        AugmentConfig(scale=1.0)
    with pytest.raises(ConfigError, match="degrees"):
        AugmentConfig(degrees=-1.0)


def _bbox_params() -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=["types"], clip=True, min_visibility=0.1,
                        min_width=2, min_height=2)


def test_cropped_affine_equals_affine_then_center_crop():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (9, 9), 3)
    boxes = np.array([[100, 100, 150, 140], [10, 20, 60, 90], [200, 180, 250, 250]], np.float32)
    args = dict(scale=(0.6, 1.4), keep_ratio=True, translate_px={"x": (-12, 12), "y": (-12, 12)},
                rotate=(-10, 10), shear=(-3, 3), fill=PAD_VALUE, p=1.0)
    fused = A.Compose([CroppedAffine(size=128, **args)], bbox_params=_bbox_params())
    split = A.Compose([A.Affine(**args), A.CenterCrop(128, 128)], bbox_params=_bbox_params())
    kept_any = False
    for seed in range(6):
        fused.set_random_seed(seed)
        split.set_random_seed(seed)
        a = fused(image=image, bboxes=boxes, types=np.arange(3))
        b = split(image=image, bboxes=boxes, types=np.arange(3))
        assert a["image"].shape == (128, 128, 3)
        assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() < 0.5
        np.testing.assert_allclose(a["bboxes"], b["bboxes"], atol=1e-3)
        assert list(a["types"]) == list(b["types"])
        kept_any |= len(a["bboxes"]) > 0
    assert kept_any


def test_mosaic_places_tiles_around_the_centre():
    size = 100
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    tiles = [(np.full((80, 60, 3), c, np.uint8), np.array([[10, 10, 50, 70]], np.float32), np.array([k]))
             for k, c in enumerate(colours)]
    canvas, boxes, types = mosaic4(tiles, size, center=(90, 110))
    assert canvas.shape == (200, 200, 3) and canvas.dtype == np.uint8
    # Quadrants meet at the centre; outside the tiles stays grey.
    assert tuple(canvas[109, 89]) == colours[0] and tuple(canvas[109, 90]) == colours[1]
    assert tuple(canvas[110, 89]) == colours[2] and tuple(canvas[110, 90]) == colours[3]
    assert tuple(canvas[5, 5]) == (PAD_VALUE,) * 3 and tuple(canvas[195, 195]) == (PAD_VALUE,) * 3
    np.testing.assert_allclose(boxes, [[40, 40, 80, 100], [100, 40, 140, 100],
                                       [40, 120, 80, 180], [100, 120, 140, 180]])
    assert types.tolist() == [0, 1, 2, 3]
    # The box pixels carry their tile's colour.
    for (x1, y1, x2, y2), k in zip(boxes.astype(int), types):
        assert tuple(canvas[(y1 + y2) // 2, (x1 + x2) // 2]) == colours[k]


def test_mosaic_cuts_at_the_canvas_and_clips_boxes():
    size = 100
    big = np.zeros((100, 100, 3), np.uint8)
    # Tile 0 ends at the centre (30, 30): its left 70 px and top 70 px fall off the canvas.
    tiles = [(big, np.array([[0, 0, 20, 20], [60, 60, 90, 95]], np.float32), np.array([0, 1])),
             (big, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
             (big, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
             (big, np.array([[50, 50, 80, 80]], np.float32), np.array([2]))]
    canvas, boxes, types = mosaic4(tiles, size, center=(30, 30))
    assert canvas.shape == (200, 200, 3)
    # The first box lay entirely in the cut part: gone. The second is clipped to the canvas.
    np.testing.assert_allclose(boxes, [[0, 0, 20, 25], [80, 80, 110, 110]])
    assert types.tolist() == [1, 2]


def test_mixup_blends_and_keeps_both_box_sets():
    a = (np.full((8, 8, 3), 200, np.uint8), np.array([[1, 1, 3, 3]], np.float32), np.array([0]))
    b = (np.full((8, 8, 3), 100, np.uint8), np.array([[4, 4, 7, 7], [0, 0, 2, 2]], np.float32), np.array([2, 1]))
    image, boxes, types = mixup(a, b, 0.25)
    assert image.dtype == np.uint8 and np.all(image == 125)
    assert boxes.shape == (3, 4) and types.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="one shape"):
        mixup(a, (np.zeros((4, 4, 3), np.uint8), b[1], b[2]), 0.5)


def test_geometric_without_randomness_is_a_centre_crop_with_the_box_rule():
    imgsz = 100
    aug = Augmenter(AugmentConfig(**STILL), imgsz)
    canvas = np.full((200, 200, 3), 30, np.uint8)
    boxes = np.array([
        [60, 60, 90, 90],     # inside the crop (50..150): kept, shifted by -50
        [0, 0, 20, 20],       # outside the crop: removed
        [40, 100, 60, 120],   # half inside: kept, clipped
        [45, 100, 54, 140],   # 4 of 9 px wide inside -> 44% visible: kept
        [41, 100, 51.5, 140], # 1.5 px inside (14% visible): too thin, removed
        [10, 60, 54, 80],     # 4 of 44 px inside: under 10% visible, removed
    ], np.float32)
    types = np.arange(len(boxes))
    image, out, out_types = aug.geometric(canvas, boxes, types, seed=0)
    assert image.shape == (100, 100, 3)
    np.testing.assert_allclose(out, [[10, 10, 40, 40], [0, 50, 10, 70], [0, 50, 4, 90]], atol=1e-4)
    assert out_types.tolist() == [0, 2, 3]


def _scene(size: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((size, size, 3), 60, np.uint8)
    cv2.rectangle(image, (20, 30), (59, 79), (230, 40, 40), -1)
    cv2.circle(image, (115, 110), 25, (40, 60, 230), -1)
    boxes = np.array([[20, 30, 60, 80], [90, 85, 141, 136]], np.float32)
    return image, boxes, np.array([0, 2])


def _colour_share(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int]) -> float:
    x1, y1, x2, y2 = np.round(box).astype(int)
    patch = image[y1:y2, x1:x2].astype(int)
    return float((np.abs(patch - np.array(colour)).max(axis=2) < 40).mean())


def test_random_affine_keeps_boxes_on_their_objects():
    image, boxes, types = _scene()
    colours = {0: (230, 40, 40), 2: (40, 60, 230)}
    cfg = AugmentConfig(**{**STILL, "degrees": 10.0, "translate": 0.1, "scale": 0.3, "shear": 2.0})
    aug = Augmenter(cfg, 160)
    seen = 0
    for seed in range(8):
        out, new_boxes, new_types = aug.geometric(image, boxes, types, seed=seed)
        assert sorted(new_types.tolist()) == [0, 2]  # both objects stay inside at this strength
        for box, kind in zip(new_boxes, new_types):
            assert _colour_share(out, box, colours[int(kind)]) > 0.5
            # Every object pixel lies inside its box (the box encloses the transformed object).
            mask = (np.abs(out.astype(int) - np.array(colours[int(kind)])).max(axis=2) < 40)
            x1, y1, x2, y2 = box
            ys, xs = np.nonzero(mask)
            inside = (xs >= x1 - 1) & (xs <= x2 + 1) & (ys >= y1 - 1) & (ys <= y2 + 1)
            assert inside.mean() > 0.99
            seen += 1
    assert seen == 16


def test_flip_mirrors_boxes_and_hsv_leaves_them_alone():
    image, boxes, types = _scene()
    flip = Augmenter(AugmentConfig(**{**STILL, "fliplr": 1.0}), 160)
    out, new_boxes, new_types = flip.photometric(image, boxes, types, seed=3)
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_allclose(new_boxes[:, [0, 2]], 160 - boxes[:, [2, 0]], atol=1e-4)
    np.testing.assert_allclose(new_boxes[:, [1, 3]], boxes[:, [1, 3]], atol=1e-4)
    assert new_types.tolist() == types.tolist()

    flipud = Augmenter(AugmentConfig(**{**STILL, "flipud": 1.0}), 160)
    out, new_boxes, _ = flipud.photometric(image, boxes, types, seed=3)
    np.testing.assert_array_equal(out, image[::-1])
    np.testing.assert_allclose(new_boxes[:, [1, 3]], 160 - boxes[:, [3, 1]], atol=1e-4)

    hsv = Augmenter(AugmentConfig(**{**STILL, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}), 160)
    changed = 0
    for seed in range(4):
        out, new_boxes, _ = hsv.photometric(image, boxes, types, seed=seed)
        np.testing.assert_allclose(new_boxes, boxes, atol=1e-4)
        changed += int(np.abs(out.astype(int) - image).mean() > 1)
    assert changed >= 3


def test_same_seed_same_result():
    image, boxes, types = _scene()
    aug = Augmenter(AugmentConfig(), 160)
    first = aug.geometric(image, boxes, types, seed=11)
    again = aug.geometric(image, boxes, types, seed=11)
    other = aug.geometric(image, boxes, types, seed=12)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_blur_and_jpeg_soften_the_image_and_keep_the_boxes() -> None:


    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    boxes, types = np.array([[10, 10, 40, 40]], np.float32), np.array([2])
    still = dict(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0)
    plain = Augmenter(AugmentConfig(**still), 96).photometric(image, boxes, types, seed=5)
    assert np.array_equal(plain[0], image)  # nothing asked: the pixels are untouched
    sharpness = lambda img: float(np.var(cv2.Laplacian(img, cv2.CV_32F)))  # noqa: E731
    blurred = Augmenter(AugmentConfig(**still, blur=1.0), 96).photometric(image, boxes, types, seed=5)
    assert sharpness(blurred[0]) < 0.5 * sharpness(image)
    compressed = Augmenter(AugmentConfig(**still, jpeg=1.0), 96).photometric(image, boxes, types, seed=5)
    assert not np.array_equal(compressed[0], image) and compressed[0].shape == image.shape
    for _, out_boxes, out_types in (blurred, compressed):
        np.testing.assert_array_equal(out_boxes, boxes)
        np.testing.assert_array_equal(out_types, types)
