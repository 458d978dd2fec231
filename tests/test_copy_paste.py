"""Copy-paste of balls (`augment.copy_paste`): the crop bank, the paste itself and its settings.

Pastes are checked pixel by pixel against the crop (a crop pasted at its own size is copied
as it is under the ellipse) and against the sample without pasting (drawn from the same
seed: everything outside the pasted balls stays as it was).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.big_images import SCENES, draw_scene, pixel_boxes, write_dataset
from mhyolo.config import from_dict
from mhyolo.data.augment import AugmentConfig
from mhyolo.data.copy_paste import BallCrop, CopyPaste, CopyPasteConfig, CropBank, ellipse_alpha, paste_ball
from mhyolo.data.dataset import YoloDataset
from mhyolo.data.image_file import read_image
from mhyolo.data.naming import output_stem, source_of
from mhyolo.data.spec import DataSpec, load_data_spec
from mhyolo.errors import ConfigError
from mhyolo.train.config import TrainConfig

IMGSZ = 320
STILL = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0,
             perspective=0.0, flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0)


def _pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _ellipse_inside(height: int, width: int) -> np.ndarray:
    """Pixel centres inside the ellipse inscribed in a height x width box, computed here independently."""
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs + 0.5 - width / 2) / (width / 2)) ** 2 + ((ys + 0.5 - height / 2) / (height / 2)) ** 2 <= 1


# -- the paste ----------------------------------------------------------------------------------

def test_a_hard_edged_paste_copies_the_crop_under_the_ellipse_and_nothing_else():
    image = _pattern(100, 120, seed=1)
    before = image.copy()
    crop = _pattern(21, 15, seed=2)
    paste_ball(image, crop, (40, 30, 55, 51), edge_px=0.0)
    inside = _ellipse_inside(21, 15)
    region, old = image[30:51, 40:55], before[30:51, 40:55]
    np.testing.assert_array_equal(region[inside], crop[inside])
    np.testing.assert_array_equal(region[~inside], old[~inside])
    outside = np.ones(image.shape[:2], bool)
    outside[30:51, 40:55] = False
    np.testing.assert_array_equal(image[outside], before[outside])


def test_a_soft_rim_blends_only_inside_the_ellipse():
    image = np.full((64, 64, 3), 20, np.uint8)
    crop = np.full((30, 30, 3), 220, np.uint8)
    paste_ball(image, crop, (10, 10, 40, 40), edge_px=2.0)
    alpha = ellipse_alpha(30, 30, 2.0)
    region = image[10:40, 10:40]
    inside = _ellipse_inside(30, 30)
    assert (alpha[~inside] == 0).all() and (alpha[inside] > 0).all()
    assert (region[alpha == 1] == 220).all() and (region[alpha == 0] == 20).all()
    rim = (alpha > 0) & (alpha < 1)
    assert rim.any() and ((region[rim] > 20) & (region[rim] < 220)).all()
    core = _ellipse_inside(30, 30) & (alpha == 1)
    assert core.sum() > 0.7 * inside.sum()  # the rim is a thin ring
    assert (image[:10] == 20).all() and (image[40:] == 20).all()


def _bank(*crops: tuple[np.ndarray, int, str]) -> CropBank:
    return CropBank([BallCrop(pixels, pixels.shape[1] / pixels.shape[0], kind, source)
                     for pixels, kind, source in crops])


def test_pasted_balls_get_one_label_each_inside_the_image_at_the_pasted_size():
    config = CopyPasteConfig(prob=1.0, max_per_image=4, min_px=6, max_px=40, edge_px=0.0)
    colours = {0: 250, 1: 5}
    bank = _bank((np.full((30, 30, 3), colours[0], np.uint8), 0, "a"),
                 (np.full((28, 14, 3), colours[1], np.uint8), 1, "b"))
    paster = CopyPaste(config, bank)
    existing = np.array([[100, 100, 160, 150]], np.float32)
    pasted_total = 0
    for seed in range(60):
        image = np.full((IMGSZ, IMGSZ, 3), 128, np.uint8)
        out, boxes, types = paster(image, existing, np.array([2]), np.random.default_rng(seed), source="a")
        assert (image == 128).all(), "the input image is left as it was"
        np.testing.assert_array_equal(boxes[:1], existing)
        assert types[0] == 2
        new, new_types = boxes[1:], types[1:]
        assert 1 <= len(new) <= 4
        pasted_total += len(new)
        assert (new >= 0).all() and (new[:, [0, 2]] <= IMGSZ).all() and (new[:, [1, 3]] <= IMGSZ).all()
        np.testing.assert_array_equal(new, np.round(new))  # whole pixels
        sides = np.stack([new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]], axis=1)
        assert (sides.max(axis=1) >= 6).all() and (sides.max(axis=1) <= 40).all()
        for (x1, y1, x2, y2), kind in zip(new.astype(int), new_types):
            # the pixels that changed are the ball's: inside its box and filling it (within 1 px)
            changed = np.nonzero((out[y1:y2, x1:x2] == colours[kind]).all(axis=2))
            assert changed[0].min() <= 1 and changed[0].max() >= y2 - y1 - 2
            assert changed[1].min() <= 1 and changed[1].max() >= x2 - x1 - 2
            if kind == 1:  # the box keeps the crop's aspect (1:2)
                assert abs((x2 - x1) * 2 - (y2 - y1)) <= 2
        # no ball pasted over another (the sample's or a pasted one)
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                dx = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
                dy = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
                assert dx <= 0 or dy <= 0, "a pasted ball covers another ball"
        untouched = np.ones((IMGSZ, IMGSZ), bool)
        for x1, y1, x2, y2 in new.astype(int):
            untouched[y1:y2, x1:x2] = False
        assert (out[untouched] == 128).all()
    assert pasted_total > 60


def test_no_placement_over_a_ball_means_no_paste():
    # a sample that is one ball from edge to edge: every place overlaps it, nothing is pasted
    paster = CopyPaste(CopyPasteConfig(prob=1.0, min_px=6, max_px=10), _bank((np.zeros((8, 8, 3), np.uint8), 0, "a")))
    image = np.zeros((64, 64, 3), np.uint8)
    whole = np.array([[0, 0, 64, 64]], np.float32)
    out, boxes, types = paster(image, whole, np.array([1]), np.random.default_rng(0), "b")
    assert len(boxes) == 1 and (out == image).all()


def test_ball_free_samples_and_other_sources_are_favoured():
    config = CopyPasteConfig(prob=0.3, empty_boost=3.0, max_per_image=1, other_source=0.75)
    bank = _bank(*[(np.zeros((10, 10, 3), np.uint8), 0, "home")] * 3, *[(np.zeros((10, 10, 3), np.uint8), 1, "away")])
    paster = CopyPaste(config, bank)
    rng = np.random.default_rng(0)
    image = np.zeros((IMGSZ, IMGSZ, 3), np.uint8)
    draws = 400
    pasted = {"empty": 0, "balls": 0}
    for _ in range(draws):
        pasted["empty"] += len(paster(image, np.zeros((0, 4)), np.zeros(0), rng, "home")[1])
        pasted["balls"] += len(paster(image, np.array([[0, 0, 5, 5]]), np.array([0]), rng, "home")[1]) - 1
    for key, p in (("empty", 0.9), ("balls", 0.3)):
        assert abs(pasted[key] - draws * p) <= 4 * np.sqrt(draws * p * (1 - p)), (key, pasted[key])
    # from "home", the one "away" crop: 0.75 + 0.25 x 1/4 of the picks
    away = sum(bank.pick(rng, "home", 0.75).source == "away" for _ in range(draws))
    p = 0.75 + 0.25 / 4
    assert abs(away - draws * p) <= 4 * np.sqrt(draws * p * (1 - p)), away
    assert all(bank.pick(rng, "away", 1.0).source == "home" for _ in range(50))


# -- the bank -----------------------------------------------------------------------------------

@pytest.fixture
def spec(tmp_path: Path) -> DataSpec:
    return write_dataset(tmp_path / "big")


def test_the_bank_holds_every_ball_cut_from_its_image_and_small(spec: DataSpec):
    files = sorted((spec.root / "images").iterdir())
    dataset = YoloDataset(spec, "train", IMGSZ, augment=None, progress=False)
    config = CopyPasteConfig(prob=1.0, max_px=24)
    bank = CropBank.from_split(dataset.files, dataset.labels, ["s"] * len(files), config, seed=0, read=read_image)
    balls = [(name, ball) for name in sorted(SCENES) for ball in SCENES[name][2]]
    assert len(bank) == len(balls) == sum(len(rows) for rows in dataset.labels)
    by_type = sorted((c.type, c.pixels.shape[:2]) for c in bank.crops)
    expected = []
    for name, (kind, x1, y1, x2, y2) in balls:
        scale = min(1.0, 24 / max(x2 - x1, y2 - y1))
        expected.append((kind, (round((y2 - y1) * scale), round((x2 - x1) * scale))))
    assert by_type == sorted(expected)
    for crop in bank.crops:
        assert crop.pixels.flags.owndata and max(crop.pixels.shape[:2]) <= 24
    # a crop at its native size is the image's own pixels
    native = [c for c in bank.crops if c.pixels.shape[:2] == (14, 12)]
    original = draw_scene(*SCENES["big_a.png"])
    np.testing.assert_array_equal(native[0].pixels, original[80:94, 100:112])
    assert native[0].aspect == pytest.approx(12 / 14, abs=1e-4)


def test_the_bank_keeps_at_most_its_size_drawn_by_the_seed(spec: DataSpec):
    dataset = YoloDataset(spec, "train", IMGSZ, augment=None, progress=False)

    def kept(seed: int) -> list[tuple[int, tuple[int, ...]]]:
        bank = CropBank.from_split(dataset.files, dataset.labels, ["s"] * len(dataset), CopyPasteConfig(bank=3),
                                   seed=seed, read=read_image)
        return [(c.type, c.pixels.shape) for c in bank.crops]

    assert len(kept(0)) == 3 and kept(0) == kept(0)
    assert len({tuple(kept(seed)) for seed in range(8)}) > 1


def test_built_names_give_the_source_and_other_names_their_folder():
    classes = ["basketball", "football", "tennis-ball"]
    for cls in [*classes, "negative"]:
        for source in ("seed", "football_worldcup", "a.b-c"):
            assert source_of(f"/d/images/train/{output_stem(cls, source, 7, 4)}.jpg", classes) == source
    assert source_of("/d/images/train/08fd33_0_10_png.rf.05.jpg", classes) == "/d/images/train"
    assert source_of("/d/images/train/frame_12.jpg", classes) == "/d/images/train"


# -- in the dataset ------------------------------------------------------------------------------

def test_pasting_adds_balls_and_leaves_the_rest_of_the_sample_as_it_was(spec: DataSpec):
    config = CopyPasteConfig(prob=1.0, max_per_image=3, min_px=6, max_px=40, edge_px=1.0)
    plain = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**{**STILL, "mosaic": 0.5}), seed=3,
                        progress=False)
    pasted = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**{**STILL, "mosaic": 0.5}, copy_paste=config),
                         seed=3, progress=False)
    added = 0
    for epoch in range(3):
        plain.set_epoch(epoch)
        pasted.set_epoch(epoch)
        for index in range(len(plain)):
            a, b = plain[index], pasted[index]
            n = len(a.labels)
            torch.testing.assert_close(b.labels[:n], a.labels)
            new = pixel_boxes(b.labels[n:].numpy(), IMGSZ)
            added += len(new)
            assert 1 <= len(new) <= 3
            sides = np.stack([new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]], axis=1)
            assert ((sides.max(axis=1) > 6 - 1) & (sides.max(axis=1) < 40 + 1)).all()
            assert (new >= -1e-3).all() and (new <= IMGSZ + 1e-3).all()
            outside = np.ones((IMGSZ, IMGSZ), bool)
            for x1, y1, x2, y2 in np.round(new).astype(int):
                outside[y1:y2, x1:x2] = False
            image_a, image_b = a.image.permute(1, 2, 0).numpy(), b.image.permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(image_b[outside], image_a[outside])
            assert not np.array_equal(image_a, image_b)
    assert added >= len(plain) * 3


def test_same_seed_same_pastes_other_seed_other_pastes(spec: DataSpec):
    def samples(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dataset = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(copy_paste=CopyPasteConfig(prob=0.8)),
                              seed=seed, progress=False)
        out = []
        for epoch in range(2):
            dataset.set_epoch(epoch)
            out += [(dataset[i].image, dataset[i].labels) for i in range(len(dataset))]
        return out

    first, again, other = samples(1), samples(1), samples(2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_real_broadcast_balls_in_the_bank_and_pasted(shared: Path, tmp_path: Path):
    source = shared / "data" / "football_broadcast" / "train"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    root = tmp_path / "mixed"
    # two broadcast frames (ball boxes only, named as a build names them) beside generated images
    write_dataset(root, {"football_gen_0001.png": SCENES["small_d.png"], "negative_gen_0001.png": (320, 320, [])},
                  names=["football"])
    frames = sorted((source / "images").iterdir())[:2]
    for n, image in enumerate(frames, 1):
        stem = output_stem("football", "broadcast", n, 4)
        shutil.copy(image, root / "images" / f"{stem}.jpg")
        rows = [line for line in (source / "labels" / f"{image.stem}.txt").read_text().splitlines()
                if line.split() and line.split()[0] == "0"]
        (root / "labels" / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    spec = load_data_spec(root / "data.yaml")
    config = CopyPasteConfig(prob=1.0, max_per_image=3, min_px=6, max_px=24, other_source=1.0)
    dataset = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**STILL, copy_paste=config), seed=0,
                          progress=False)
    assert sorted(set(dataset.sources)) == ["broadcast", "gen"]
    bank = dataset._copy_paste.bank
    broadcast = [c for c in bank.crops if c.source == "broadcast"]
    # balls of about 7 x 16 px in the 1280 x 1280 frames (1920 x 1080 stretched: taller than wide)
    assert len(broadcast) == 2 and all(max(c.pixels.shape[:2]) <= 20 and c.aspect < 0.7 for c in broadcast)
    # the ball-free generated image gets balls, from the broadcast frames (the other source)
    index = [p.name for p in dataset.files].index("negative_gen_0001.png")
    for epoch in range(4):
        dataset.set_epoch(epoch)
        labels = dataset[index].labels
        assert 1 <= len(labels) <= 3 and (labels[:, 0] == 0).all()
        aspects = {round(c.aspect, 2) for c in broadcast}
        for x1, y1, x2, y2 in pixel_boxes(labels.numpy(), IMGSZ):
            assert min(abs((x2 - x1) / (y2 - y1) - a) for a in aspects) < 0.25  # a broadcast ball's shape


# -- settings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values, key", [
    ({"prob": 1.5}, "prob"), ({"prob": -0.5}, "prob"), ({"other_source": 2}, "other_source"),
    ({"min_px": 30, "max_px": 20}, "min_px"), ({"max_per_image": 0}, "max_per_image"), ({"min_px": 0}, "min_px"),
    ({"bank": 0}, "bank"), ({"edge_px": -1.0}, "edge_px"), ({"empty_boost": 0.5}, "empty_boost"),
])
def test_bad_copy_paste_settings_name_the_key(values: dict, key: str):
    with pytest.raises(ConfigError, match=rf"augment\.copy_paste\.{key}\b"):
        from_dict(TrainConfig, {"augment": {"copy_paste": values}})


def test_balls_larger_than_the_training_size_are_refused(spec: DataSpec):
    with pytest.raises(ConfigError, match=r"augment\.copy_paste\.max_px"):
        YoloDataset(spec, "train", 64, augment=AugmentConfig(copy_paste=CopyPasteConfig(prob=0.5, max_px=96)),
                    progress=False)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(TrainConfig, {"augment": {"copy_paste": {"probability": 0.5}}})
