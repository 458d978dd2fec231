"""YoloDataset on a synthetic dataset drawn with known objects, plus a few real seed images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler
from helpers.big_images import yolo_rows

from mhyolo.data.augment import AugmentConfig
from mhyolo.data.dataset import Batch, YoloDataset, build_dataloader, collate_fn
from mhyolo.data.labels import read_labels, write_labels
from mhyolo.data.preview import draw_batch
from mhyolo.data.spec import DataSpec, label_path_for, load_data_spec
from mhyolo.errors import DataError
from mhyolo.infer.preprocess import scale_boxes_to_original

IMGSZ = 320
BACKGROUND = (70, 70, 70)
COLOURS = {0: (230, 40, 40), 1: (40, 200, 40), 2: (40, 60, 230)}  # RGB per ball type
STILL = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0,
             perspective=0.0, flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0)

# name: (width, height, [(type, "rect", x1, y1, x2, y2) | (type, "circle", cx, cy, r)])
SCENES = {
    "a.png": (320, 240, [(0, "rect", 30, 40, 110, 120), (2, "circle", 220, 150, 40)]),
    "b.png": (240, 320, [(1, "circle", 120, 90, 45), (2, "rect", 60, 200, 180, 290)]),
    "c.png": (300, 300, [(1, "rect", 20, 20, 100, 90), (0, "rect", 180, 170, 280, 280), (2, "circle", 70, 230, 30)]),
    "d.png": (400, 200, [(0, "circle", 100, 100, 60), (1, "rect", 250, 50, 350, 150)]),
    "e.png": (256, 256, []),
    "f.jpg": (200, 260, [(2, "circle", 100, 130, 50)]),
}


def _draw(width: int, height: int, objects: list) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with filled shapes, and the pixel xyxy box + type of each."""
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    rows = []
    for kind, shape, *geometry in objects:
        if shape == "rect":
            x1, y1, x2, y2 = geometry
            cv2.rectangle(image, (x1, y1), (x2, y2), COLOURS[kind], -1)
            rows.append([kind, x1, y1, x2 + 1, y2 + 1])  # cv2 fills both end pixels
        else:
            cx, cy, r = geometry
            cv2.circle(image, (cx, cy), r, COLOURS[kind], -1)
            rows.append([kind, cx - r, cy - r, cx + r + 1, cy + r + 1])
    return image, np.array(rows, np.float32).reshape(-1, 5)


def _write_dataset(root: Path, scenes: dict = SCENES) -> DataSpec:
    (root / "images").mkdir(parents=True)
    for name, (width, height, objects) in scenes.items():
        image, rows = _draw(width, height, objects)
        cv2.imwrite(str(root / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
        write_labels(label_path_for(root / "images" / name), yolo_rows(rows, width, height))
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [basketball, football, tennis-ball]\n")
    return load_data_spec(root / "data.yaml")


@pytest.fixture
def spec(tmp_path: Path) -> DataSpec:
    return _write_dataset(tmp_path / "synthetic")


def _hwc(sample_image: torch.Tensor) -> np.ndarray:
    return sample_image.permute(1, 2, 0).numpy()


def _pixel_boxes(labels: torch.Tensor, size: int) -> np.ndarray:
    cx, cy, w, h = (labels[:, 1:] * size).numpy().T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _colour_mask(image: np.ndarray, kind: int) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(COLOURS[kind])).max(axis=2) < 40


def _assert_boxes_on_objects(image: np.ndarray, labels: torch.Tensor, min_fill: float) -> int:
    """Each box is mostly its type's colour, and each visible object lies inside a box of its type.

    Objects cut by the image border are not required to keep a box (YOLOv5 drops slivers).
    Returns how many boxes were checked for fill.
    """
    size = image.shape[0]
    boxes = _pixel_boxes(labels, size)
    kinds = labels[:, 0].long().tolist()
    checked = 0
    for kind in COLOURS:
        mask = _colour_mask(image, kind)
        covered = np.zeros_like(mask)
        for (x1, y1, x2, y2), k in zip(boxes, kinds):
            if k != kind:
                continue
            covered[max(int(y1) - 1, 0):int(np.ceil(y2)) + 1, max(int(x1) - 1, 0):int(np.ceil(x2)) + 1] = True
            if x1 > 1 and y1 > 1 and x2 < size - 1 and y2 < size - 1:
                patch = mask[int(round(y1)):int(round(y2)), int(round(x1)):int(round(x2))]
                assert patch.mean() >= min_fill, f"type {kind} box {x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f} fill {patch.mean():.2f}"
                checked += 1
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for c in range(1, count):
            x, y, w, h, area = stats[c]
            if area < 40 or min(w, h) < 4 or x == 0 or y == 0 or x + w == size or y + h == size:
                continue
            share = covered[components == c].mean()
            assert share > 0.97, f"type {kind} object at {x},{y} ({w}x{h}) only {share:.2f} inside its boxes"
    return checked


def test_validation_letterboxes_and_maps_back(spec: DataSpec):
    dataset = YoloDataset(spec, "val", IMGSZ, augment=None)
    assert len(dataset) == len(SCENES)
    for i, path in enumerate(dataset.files):
        width, height, objects = SCENES[path.name]
        sample = dataset[i]
        assert sample.image.shape == (3, IMGSZ, IMGSZ) and sample.image.dtype == torch.uint8
        assert sample.labels.dtype == torch.float32 and sample.labels.shape == (len(objects), 5)
        assert sample.path == path and sample.original_shape == (height, width)
        _, drawn = _draw(width, height, objects)
        assert sample.labels[:, 0].tolist() == drawn[:, 0].tolist()
        _assert_boxes_on_objects(_hwc(sample.image), sample.labels, min_fill=0.7)
        back = scale_boxes_to_original(_pixel_boxes(sample.labels, IMGSZ), sample.info)
        np.testing.assert_allclose(back, drawn[:, 1:], atol=0.5)


def test_mosaic_samples_keep_boxes_on_their_objects(spec: DataSpec):
    cfg = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, mixup=0.0)  # colours must stay recognisable
    dataset = YoloDataset(spec, "train", IMGSZ, augment=cfg, seed=3)
    checked = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            sample = dataset[i]
            assert sample.image.shape == (3, IMGSZ, IMGSZ) and sample.image.dtype == torch.uint8
            assert sample.info is None
            labels = sample.labels
            assert labels.shape[1] == 5
            assert set(labels[:, 0].tolist()) <= {0.0, 1.0, 2.0}
            x1y1 = labels[:, 1:3] - labels[:, 3:5] / 2
            x2y2 = labels[:, 1:3] + labels[:, 3:5] / 2
            assert torch.all(x1y1 >= -1e-6) and torch.all(x2y2 <= 1 + 1e-6) and torch.all(labels[:, 3:] > 0)
            checked += _assert_boxes_on_objects(_hwc(sample.image), labels, min_fill=0.45)
    assert checked >= 20  # the check really ran on many boxes


def test_mosaic_brings_in_other_images(spec: DataSpec):
    # "e.png" has no objects: its mosaics can only show boxes borrowed from three other images.
    dataset = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**{**STILL, "mosaic": 1.0}), seed=0)
    index = dataset_index(dataset, "e.png")
    counts = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        counts.append(dataset[index].labels.shape[0])
    assert sum(counts) > 0
    dataset.set_mosaic(False)
    assert dataset[index].labels.shape[0] == 0


def test_mixup_samples_are_valid(spec: DataSpec):
    dataset = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(mixup=1.0), seed=0)
    with_mixup = sum(dataset[i].labels.shape[0] for i in range(len(dataset)))
    plain = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(mixup=0.0), seed=0)
    without = sum(plain[i].labels.shape[0] for i in range(len(plain)))
    assert with_mixup > without  # a blended second mosaic brings its boxes along
    sample = dataset[1]
    assert sample.image.shape == (3, IMGSZ, IMGSZ) and set(sample.labels[:, 0].tolist()) <= {0.0, 1.0, 2.0}


def test_close_mosaic_gives_letterboxed_images(spec: DataSpec):
    val = YoloDataset(spec, "val", IMGSZ, augment=None)
    train = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**{**STILL, "mosaic": 1.0}), seed=0)
    assert train.mosaic_enabled
    index = dataset_index(train, "a.png")
    mosaic_sample = train[index]
    train.set_mosaic(False)
    assert not train.mosaic_enabled
    single = train[index]
    reference = val[index]
    assert (single.image.int() - reference.image.int()).abs().float().mean() < 2.0
    torch.testing.assert_close(single.labels, reference.labels, atol=2e-3, rtol=0)
    assert not torch.equal(mosaic_sample.image, single.image)


def dataset_index(dataset: YoloDataset, name: str) -> int:
    return [p.name for p in dataset.files].index(name)


def test_horizontal_flip_mirrors_the_image_and_boxes(spec: DataSpec):
    val = YoloDataset(spec, "val", IMGSZ, augment=None)
    flipped = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(**{**STILL, "fliplr": 1.0}))
    index = dataset_index(val, "c.png")
    reference, sample = val[index], flipped[index]
    assert (sample.image.int() - reference.image.flip(-1).int()).abs().float().mean() < 1.0
    expected = reference.labels.clone()
    expected[:, 1] = 1 - expected[:, 1]
    torch.testing.assert_close(sample.labels, expected, atol=2e-3, rtol=0)


def test_same_seed_epoch_index_same_sample(spec: DataSpec):
    a = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(mixup=0.5), seed=5)
    b = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(mixup=0.5), seed=5)
    other_seed = YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig(mixup=0.5), seed=6)
    for dataset in (a, b, other_seed):
        dataset.set_epoch(2)
    first, again = a[3], b[3]
    assert torch.equal(first.image, again.image) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.image, other_seed[3].image)
    assert not torch.equal(first.image, a[4].image)
    a.set_epoch(3)
    assert a.epoch == 3
    assert not torch.equal(first.image, a[3].image)
    a.set_epoch(2)
    assert torch.equal(first.image, a[3].image)


def test_collate_batches_targets_with_indices(spec: DataSpec):
    dataset = YoloDataset(spec, "val", IMGSZ, augment=None)
    samples = [dataset[i] for i in range(len(dataset))]
    batch = collate_fn(samples)
    assert isinstance(batch, Batch) and len(batch) == len(SCENES)
    assert batch.images.shape == (len(SCENES), 3, IMGSZ, IMGSZ) and batch.images.dtype == torch.uint8
    counts = [s.labels.shape[0] for s in samples]
    assert batch.targets.shape == (sum(counts), 6) and batch.targets.dtype == torch.float32
    expected_index = [float(i) for i, n in enumerate(counts) for _ in range(n)]
    assert batch.targets[:, 0].tolist() == expected_index
    torch.testing.assert_close(batch.targets[:, 1:], torch.cat([s.labels for s in samples]))
    assert batch.paths == dataset.files and batch.infos == [s.info for s in samples]
    empty = collate_fn([dataset[dataset_index(dataset, "e.png")]])
    assert empty.targets.shape == (0, 6)


def test_loader_workers_follow_epoch_and_mosaic_switch(spec: DataSpec):
    """Persistent workers see `set_epoch` / `set_mosaic` (checked in a process of its own:
    see tests/helpers/loader_workers.py for why)."""
    import subprocess
    import sys

    script = Path(__file__).parent / "helpers" / "loader_workers.py"
    done = subprocess.run([sys.executable, str(script), str(spec.yaml_path)], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, start_new_session=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_shuffle_order_is_seeded_and_sampler_is_accepted(spec: DataSpec):
    dataset = YoloDataset(spec, "val", IMGSZ, augment=None)

    def order(seed: int) -> list[str]:
        loader = build_dataloader(dataset, batch_size=2, shuffle=True, workers=0, seed=seed)
        return [p.name for batch in loader for p in batch.paths]

    assert order(0) == order(0)
    assert sorted(order(0)) == sorted(p.name for p in dataset.files)
    assert any(order(0) != order(s) for s in (1, 2, 3))
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    loader = build_dataloader(dataset, batch_size=2, shuffle=True, workers=0, seed=0, sampler=sampler)
    names = [p.name for batch in loader for p in batch.paths]
    assert names == [dataset.files[i].name for i in range(1, len(dataset), 2)]


def test_bad_label_line_is_fatal_and_named(tmp_path: Path):
    spec = _write_dataset(tmp_path / "bad")
    label = label_path_for(spec.images_dir("train") / "c.png")
    lines = label.read_text().splitlines()
    lines.insert(1, "1 0.5 0.5 0.2")
    label.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        YoloDataset(spec, "train", IMGSZ, augment=AugmentConfig())
    assert f"{label}:2" in str(error.value) and "mhyolo data verify" in str(error.value)


def test_class_id_out_of_range_is_fatal(tmp_path: Path):
    spec = _write_dataset(tmp_path / "range")
    label = label_path_for(spec.images_dir("train") / "a.png")
    label.write_text(label.read_text() + "3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"a\.txt:3: class id 3 out of range"):
        YoloDataset(spec, "val", IMGSZ)


def test_undecodable_image_names_the_file(tmp_path: Path):
    spec = _write_dataset(tmp_path / "broken", {**SCENES, "z.png": (100, 100, [])})
    broken = spec.images_dir("train") / "z.png"
    broken.write_bytes(b"this is not a png")
    for augment in (None, AugmentConfig(**STILL)):
        dataset = YoloDataset(spec, "train", IMGSZ, augment=augment)
        with pytest.raises(DataError, match="z.png: cannot decode"):
            dataset[dataset_index(dataset, "z.png")]


def test_empty_split_is_an_error(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text("train: images\nnames: [ball]\n")
    with pytest.raises(DataError, match="no images"):
        YoloDataset(load_data_spec(tmp_path / "data.yaml"), "train", IMGSZ)


def test_real_seed_images(shared: Path, tmp_path: Path):
    data_yaml = shared / "data" / "seed_balls" / "data.yaml"
    if not data_yaml.is_file():
        pytest.skip(f"{data_yaml} is absent")
    spec = load_data_spec(data_yaml)
    val = YoloDataset(spec, "val", 640, augment=None)
    assert len(val) == 210
    for index in (0, 70, 140):  # one of each type
        sample = val[index]
        labels, issues = read_labels(label_path_for(sample.path), spec.nc)
        assert not issues
        h0, w0 = sample.original_shape
        pixels = _pixel_boxes(sample.labels, 640)
        original = scale_boxes_to_original(pixels, sample.info)
        cx, cy = (original[:, 0] + original[:, 2]) / 2 / w0, (original[:, 1] + original[:, 3]) / 2 / h0
        np.testing.assert_allclose(np.stack([cx, cy], 1), labels[:, 1:3], atol=1e-3)
        assert sample.labels[:, 0].tolist() == labels[:, 0].tolist()

    train = YoloDataset(spec, "train", 640, augment=AugmentConfig(), seed=0)
    samples = [train[i] for i in (0, 70, 140, 200)]
    batch = collate_fn(samples)
    assert batch.images.shape == (4, 3, 640, 640)
    assert set(batch.targets[:, 1].tolist()) <= {0.0, 1.0, 2.0}
    assert torch.all(batch.targets[:, 2:] >= 0) and torch.all(batch.targets[:, 2:] <= 1)
    grid = draw_batch(batch, spec.names)
    assert grid.shape == (1280, 1280, 3)
    out = tmp_path / "train_mosaics.png"
    assert cv2.imwrite(str(out), grid) and out.stat().st_size > 10_000
