"""`mhyolo adapt`: the temporal filter, ignore regions in the loss and the data, the pseudo-label
dataset and its review loop, refused inputs (whole runs: `test_adapt_run.py`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mhyolo.adapt.pseudo import write_dataset
from mhyolo.adapt.select import select_boxes
from mhyolo.adapt.settings import AdaptSettings
from mhyolo.adapt.student import student_data
from mhyolo.adapt.targets import find_duplicates, sample_video
from mhyolo.adapt.teacher import ImageBoxes
from mhyolo.adapt.temporal import temporally_consistent
from mhyolo.data.augment import AugmentConfig
from mhyolo.data.dataset import YoloDataset, collate_fn
from mhyolo.data.spec import load_data_spec
from mhyolo.data.verify import verify_dataset
from mhyolo.errors import MhyoloError
from mhyolo.eval.matching import score_at_precision
from mhyolo.infer.sources import VideoSource
from mhyolo.model.yolo import build_model
from mhyolo.train.assign import ignored_cells
from mhyolo.train.loss import DetectionLoss, LossConfig

GRIDS = [(8, 8), (4, 4), (2, 2)]  # a 64x64 input at strides 8, 16, 32
SIDE = 128  # test images are SIDE x SIDE


# ----------------------------------------------------------------------------- (a) temporal filter
def _square(x: float, y: float, side: float = 10.0) -> list[float]:
    return [x, y, x + side, y + side]


def test_temporal_filter_keeps_a_moving_square_and_drops_one_frame_false_squares() -> None:
    frames = []
    for t in range(8):
        boxes = [_square(10 + 6 * t, 20 + 3 * t)]  # moves 6.7 px a frame: within 2 x its 10 px side
        if t in (2, 5):
            boxes.append(_square(100, 100 - 40 * (t == 5)))  # a false square, one frame each, far from the others
        frames.append(np.array(boxes, np.float32))
    masks = temporally_consistent(frames, k=2.0)
    for t, mask in enumerate(masks):
        assert bool(mask[0]), f"frame {t}: the moving square was dropped"
        assert not mask[1:].any(), f"frame {t}: a one-frame false square was kept"
    # the same square moving faster than k x its size between samples is not consistent any more
    assert not any(mask[0] for mask in temporally_consistent(frames, k=0.5))


def test_temporal_filter_counts_unsure_boxes_of_the_neighbours_as_support() -> None:
    confident = [np.array([_square(10, 10)]), np.zeros((0, 4)), np.zeros((0, 4))]
    support = [confident[0], np.array([_square(14, 12)]), np.zeros((0, 4))]
    assert not temporally_consistent(confident, k=2.0)[0].any()
    assert temporally_consistent(confident, k=2.0, support=support)[0].all()


def test_a_lonely_confident_box_becomes_an_ignore_region_not_background() -> None:
    items = [ImageBoxes(f"f{t}.jpg", (SIDE, SIDE), np.array([_square(10 + 4 * t, 10), _square(90, 90 - 60 * t)],
                                                                 np.float32),
                        np.array([0.9, 0.8 if t == 1 else 0.05], np.float32), np.zeros(2, np.int64))
             for t in range(3)]
    middle = select_boxes(items, keep=0.5, temporal_k=2.0)[1]
    assert middle.keep.tolist() == [True, False]
    assert middle.ignore.tolist() == [False, True] and middle.lonely.tolist() == [False, True]
    # without the filter (images, not frames) the same box is a pseudo-label
    assert select_boxes(items, keep=0.5)[1].keep.tolist() == [True, True]


def test_score_at_precision_is_the_lowest_score_that_reaches_it() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    hits = np.array([True, True, False, True, True, True, False])
    # precision from the top: 1, 1, .67, .75, .8, .83, .71
    assert score_at_precision(scores, hits, 0.8) == pytest.approx(0.5)
    assert score_at_precision(scores, hits, 0.9) == pytest.approx(0.9)
    assert score_at_precision(scores, ~hits, 0.9) is None
    assert score_at_precision(np.zeros(0), np.zeros(0, bool), 0.9) is None


# ------------------------------------------------------------------- (b) ignore regions in the loss
def _loss() -> DetectionLoss:
    anchors = build_model("yolov5n", nc=1, names=["ball"]).detect.anchors.clone()
    return DetectionLoss(anchors, nc=1, config=LossConfig(), imgsz=64)


def _raw(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, h, w, 6, generator=generator) for h, w in GRIDS]


def _with_objectness(raw: list[torch.Tensor], masks: list[torch.Tensor], value: torch.Tensor | float) -> list[torch.Tensor]:
    """`raw` with the objectness logit of every anchor in the masked cells replaced."""
    out = [r.clone() for r in raw]
    for level, mask in zip(out, masks):
        cells = mask[:, None].expand(-1, level.shape[1], -1, -1)
        level[..., 4][cells] = value if isinstance(value, float) else value[: int(cells.sum())]
    return out


def test_an_ignore_region_adds_no_objectness_loss_either_way() -> None:
    loss_fn = _loss()
    targets = torch.tensor([[0, 0, 0.25, 0.25, 0.15, 0.2]])  # a real ball in image 0
    ignore = torch.tensor([[1, 0.7, 0.6, 0.12, 0.12], [0, 0.8, 0.8, 0.1, 0.1]])  # unsure boxes, both images
    raw = _raw()
    masks = ignored_cells(ignore, 2, GRIDS)
    assert all(mask.any() for mask in masks)
    base, parts = loss_fn(raw, targets, ignore=ignore)
    for value in (9.0, -9.0, torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 5):
        changed = _with_objectness(raw, masks, value)
        again, again_parts = loss_fn(changed, targets, ignore=ignore)
        assert torch.equal(again, base) and torch.equal(again_parts["obj"], parts["obj"])
        # without the ignore regions the same change moves the loss: the check can fail
        assert not torch.allclose(loss_fn(changed, targets)[0], loss_fn(raw, targets)[0])
    # cells outside the regions still count
    outside = _with_objectness(raw, [~m for m in masks], 9.0)
    assert loss_fn(outside, targets, ignore=ignore)[0] > base


def test_a_real_box_inside_an_ignore_region_still_trains_its_positives() -> None:
    loss_fn = _loss()
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.15, 0.2]])
    ignore = torch.tensor([[0, 0.5, 0.5, 0.4, 0.4]])
    raw = _raw(2)
    positives = loss_fn.assign(raw, targets)
    level = positives[0]
    lifted = [r.clone() for r in raw]
    lifted[0][level.image, level.anchor, level.gy, level.gx, 4] += 3.0
    assert not torch.equal(loss_fn(lifted, targets, ignore=ignore)[1]["obj"], loss_fn(raw, targets, ignore=ignore)[1]["obj"])


def test_without_ignore_regions_the_loss_is_bit_for_bit_the_plain_one() -> None:
    loss_fn = _loss()
    targets = torch.tensor([[0, 0, 0.25, 0.25, 0.15, 0.2], [1, 0, 0.6, 0.4, 0.3, 0.3]])
    raw = _raw(3)
    plain, parts = loss_fn(raw, targets)
    for empty in (None, torch.zeros((0, 5))):
        total, again = loss_fn(raw, targets, ignore=empty)
        assert torch.equal(total, plain) and all(torch.equal(again[k], parts[k]) for k in parts)


# ------------------------------------------------------------------------ target images for tests
@pytest.fixture(scope="module")
def tennis(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six tennis_icifx test images, shrunk to SIDE x SIDE: small, real, and distinct to a perceptual hash."""
    folder = tmp_path_factory.mktemp("tennis") / "target"
    folder.mkdir()
    for path in sorted((shared / "data" / "tennis_icifx" / "test" / "images").glob("*.jpg"))[:6]:
        image = cv2.resize(cv2.imread(str(path)), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{path.name.split('_')[0]}.png"), image)
    return folder


def _teacher_said(images: list[Path]) -> list[ImageBoxes]:
    """Hand-made teacher output: per image a confident box, an unsure one and (on the first) a second
    confident one, every class a type id of three."""
    items = []
    for i, path in enumerate(images):
        boxes = [[20, 20, 40, 44], [80, 70, 100, 90]] + ([[60, 10, 76, 26]] if i == 0 else [])
        scores = [0.9, 0.3] + ([0.7] if i == 0 else [])
        items.append(ImageBoxes(str(path), (SIDE, SIDE), np.array(boxes, np.float32), np.array(scores, np.float32),
                                np.array([i % 3, 0, 2][: len(boxes)], np.int64)))
    return items


NAMES = ["basketball", "football", "tennis-ball"]


# --------------------------------------------------- (b) ignore regions through the data, (c) review loop
def test_an_unsure_box_reaches_training_as_an_ignore_region(tennis: Path, tmp_path: Path) -> None:
    images = sorted(tennis.glob("*.png"))[:2]
    selections = select_boxes(_teacher_said(images), keep=0.5)
    write_dataset(tmp_path / "pseudo", selections, NAMES, progress=False)
    data = tmp_path / "student.yaml"
    student_data(data, tmp_path / "pseudo" / "images", None, NAMES)
    still = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, fliplr=0, mosaic=0)
    for augment in (None, still):  # letterboxed, and through the augmentation steps that leave it in place
        dataset = YoloDataset(load_data_spec(data), "train", SIDE, augment=augment, progress=False)
        batch = collate_fn([dataset[i] for i in range(len(dataset))])
        assert (batch.targets[:, 1] >= 0).all()  # an ignore region is never a target
        first = [row for row in batch.ignore.tolist() if row[0] == 0]
        assert len(first) == 1
        assert first[0][1:] == pytest.approx([90 / SIDE, 80 / SIDE, 20 / SIDE, 20 / SIDE], abs=2e-3)
        assert len(batch.targets[batch.targets[:, 0] == 0]) == 2  # the two confident boxes of image 0
    mosaic = YoloDataset(load_data_spec(data), "train", SIDE, augment=AugmentConfig(), progress=False)
    batch = collate_fn([mosaic[i] for i in range(len(mosaic))])
    assert len(batch.ignore) and (batch.targets[:, 1] >= 0).all()  # they travel through mosaic and affine too
    # a dataset that does not say `ignore_regions` reads none
    plain = tmp_path / "plain.yaml"
    plain.write_text(data.read_text().replace("ignore_regions: true", "ignore_regions: false"))
    dataset = YoloDataset(load_data_spec(plain), "train", SIDE, progress=False)
    assert all(len(dataset[i].ignore) == 0 for i in range(len(dataset)))


def test_student_data_under_a_relative_run_folder_names_its_images(tennis: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`mhyolo adapt --out runs/adapt`: the student's data.yaml still finds the pseudo-labelled images."""
    images = sorted(tennis.glob("*.png"))[:2]
    monkeypatch.chdir(tmp_path)
    run = Path("runs") / "adapt"
    write_dataset(run / "pseudo", select_boxes(_teacher_said(images), keep=0.5), NAMES, progress=False)
    student_data(run / "student.yaml", run / "pseudo" / "images", None, NAMES)
    dataset = YoloDataset(load_data_spec(run / "student.yaml"), "train", SIDE, progress=False)
    assert len(dataset) == 2


def test_pseudo_labels_pass_verify_and_a_corrected_copy_trains_without_the_removed_box(
        tennis: Path, tmp_path: Path) -> None:
    from mhyolo.cli import main

    images = sorted(tennis.glob("*.png"))[:4]
    summary = write_dataset(tmp_path / "pseudo", select_boxes(_teacher_said(images), keep=0.5), NAMES, progress=False)
    assert (summary.images, summary.kept, summary.ignored) == (4, 5, 4)
    pseudo_yaml = tmp_path / "pseudo" / "data.yaml"
    report = verify_dataset(pseudo_yaml, progress=False, workers=1)
    assert report.ok, report.problems
    assert report.splits["train"].boxes == 5
    assert main(["data", "verify", str(pseudo_yaml), "--workers", "1", "--no-progress"]) == 0
    assert (tmp_path / "pseudo" / "classes.txt").read_text().split() == NAMES
    score_lines = (tmp_path / "pseudo" / "scores" / f"{images[0].stem}.txt").read_text().split("\n")
    assert [float(line.split()[5]) for line in score_lines if line] == pytest.approx([0.9, 0.7])

    # a reviewer removes the second box of the first image in a copy and gives the copy back
    corrected = tmp_path / "corrected"
    shutil.copytree(tmp_path / "pseudo", corrected, symlinks=True)
    label = corrected / "labels" / f"{images[0].stem}.txt"
    lines = label.read_text().splitlines()
    removed = [float(v) for v in lines[1].split()]
    label.write_text(lines[0] + "\n")
    labelled = load_data_spec(corrected / "data.yaml")

    # the same images given as targets again are near-duplicates of the labelled ones: not pseudo-labelled
    found = find_duplicates([str(p) for p in images], [str(p) for p in sorted((corrected / "images").iterdir())],
                            bits=6, progress=False, workers=1)
    assert sorted(found.of_labelled) == [0, 1, 2, 3]
    empty = tmp_path / "none" / "images"
    empty.mkdir(parents=True)
    student_yaml = tmp_path / "student.yaml"
    assert student_data(student_yaml, empty, labelled, NAMES) is False  # no labelled val split
    dataset = YoloDataset(load_data_spec(student_yaml), "train", SIDE, progress=False)
    loaded = {Path(p).stem: labels for p, labels in zip(dataset.files, dataset.labels)}
    assert len(loaded) == 4
    assert len(loaded[images[0].stem]) == 1
    assert not any(np.allclose(row, removed, atol=1e-5) for row in loaded[images[0].stem])
    assert sum(len(v) for v in loaded.values()) == 4


# --------------------------------------------------------------------------------- frames of a video
def _video(path: Path, frames: int = 10, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (96, 64))
    for t in range(frames):
        image = np.full((64, 96, 3), 40, np.uint8)
        cv2.circle(image, (10 + 7 * t, 32), 6, (0, 220, 255), -1)
        writer.write(image)
    writer.release()
    return path


def test_a_video_is_sampled_at_the_asked_rate_once(tmp_path: Path) -> None:
    video = VideoSource(_video(tmp_path / "clip.mp4"))
    targets = sample_video(video, fps=5.0, folder=tmp_path / "frames", progress=False)
    assert [t.frame for t in targets] == [0, 2, 4, 6, 8]
    assert all(cv2.imread(t.path).shape == (64, 96, 3) for t in targets)
    (tmp_path / "clip.mp4").unlink()  # read back from done.json, not decoded again
    assert sample_video(video, fps=5.0, folder=tmp_path / "frames", progress=False) == targets


# ------------------------------------------------------------------------------ the keep threshold
class _Oracle:
    """A teacher that finds every labelled ball (score 0.8) and one false box per image (score 0.6),
    the images coming in the order `calibrate` reads the val split."""

    def __init__(self, spec) -> None:
        from mhyolo.data.labels import read_labels
        from mhyolo.data.pairing import split_files

        self.labels = [read_labels(pair.label)[0] for pair in split_files(spec, "val").checked().pairs()]

    def predict(self, images):
        from mhyolo.infer.predictor import Prediction

        height, width = images[0].shape[:2]
        labels = self.labels.pop(0)
        cx, cy, w, h = (labels[:, 1:] * np.array([width, height, width, height])).T
        balls = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        boxes = np.concatenate([balls, [[0, 0, 8, 8]]]).astype(np.float32)
        scores = np.array([0.8] * len(balls) + [0.6], np.float32)
        return [Prediction(boxes, scores, np.zeros(len(boxes), np.int64), ["ball"] * len(boxes), (height, width))]


@pytest.fixture(scope="module")
def coco_labelled(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tennis_icifx train and two valid images, their balls as COCO's class 32 ("sports ball"),
    named as the COCO model names its classes: labelled data in that model's classes."""
    from mhyolo.model.weights import load_model

    names = load_model(shared / "weights" / "yolov5n.pt").names
    root = tmp_path_factory.mktemp("labelled")
    source = shared / "data" / "tennis_icifx"
    for split, folder, count in (("train", "train", 3), ("val", "valid", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in sorted((source / folder / "images").glob("*.jpg"))[:count]:
            shutil.copy(image, root / "images" / split / image.name)
            lines = (source / folder / "labels" / f"{image.stem}.txt").read_text().split("\n")
            (root / "labels" / split / f"{image.stem}.txt").write_text(
                "".join("32 " + line.split(" ", 1)[1] + "\n" for line in lines if line.strip()))
    data = root / "data.yaml"
    data.write_text(json.dumps({"path": ".", "train": "images/train", "val": "images/val", "names": names}))
    return data


def test_the_keep_threshold_is_calibrated_to_the_asked_precision(coco_labelled: Path) -> None:
    from mhyolo.adapt.threshold import calibrate

    spec = load_data_spec(coco_labelled)
    strict = calibrate(_Oracle(spec), spec, 0.9, default=0.5, ignore=0.1, progress=False)
    assert (strict.how, strict.keep, strict.precision, strict.recall) == ("calibrated", pytest.approx(0.8), 1.0, 1.0)
    assert strict.images == 2 and strict.boxes >= 2
    loose = calibrate(_Oracle(spec), spec, strict.boxes / (strict.boxes + 2) - 1e-6, default=0.5, ignore=0.1,
                      progress=False)
    assert loose.keep == pytest.approx(0.6) and loose.precision < 0.9
    assert calibrate(_Oracle(spec), None, 0.9, default=0.5, ignore=0.1).how == "default"


# ------------------------------------------------------------------------------------- (d) bad input
def _settings(tmp_path: Path, weights: Path | str, images: Path | str, **extra) -> AdaptSettings:
    return AdaptSettings(weights=str(weights), images=str(images), out=str(tmp_path / "run"), progress=False, **extra)


def test_bad_input_is_refused_by_name_before_anything_is_written(tmp_path: Path, official_weights: Path,
                                                                tennis: Path, capsys: pytest.CaptureFixture) -> None:
    from mhyolo.adapt.run import run_adapt
    from mhyolo.classify.checkpoint import save_classifier
    from mhyolo.classify.model import ClassifierSpec, build_classifier
    from mhyolo.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    spec = ClassifierSpec(arch="resnet26d", names=NAMES, imgsz=32)
    classifier = save_classifier(tmp_path / "classifier.safetensors", build_classifier(spec), spec)
    missing = tmp_path / "weights" / "missing.pt"
    nowhere = tmp_path / "nowhere.yaml"
    cases = [(official_weights, empty, {}, [str(empty), "no images"]),
             (official_weights, broken, {}, [str(broken), "cannot open video"]),
             (classifier, tennis, {}, [str(classifier), "crop classifier", "not a detector"]),
             (missing, tennis, {}, [str(missing), "not found"]),
             (official_weights, tennis, {"labelled": str(nowhere)}, [str(nowhere)])]
    for weights, images, extra, named in cases:
        with pytest.raises(MhyoloError) as caught:
            run_adapt(_settings(tmp_path, weights, images, **extra))
        for words in named:
            assert words in str(caught.value)
        assert not (tmp_path / "run").exists()
    # the command prints it as one line and exits 2
    assert main(["adapt", "--weights", str(official_weights), "--images", str(empty), "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    assert str(empty) in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_labelled_data_with_other_classes_is_refused(tmp_path: Path, official_weights: Path, tennis: Path,
                                                     shared: Path) -> None:
    from mhyolo.adapt.run import run_adapt

    data = shared / "data" / "tennis_icifx" / "data.yaml"
    with pytest.raises(MhyoloError, match="would not line up"):
        run_adapt(_settings(tmp_path, official_weights, tennis, labelled=str(data)))
    assert not (tmp_path / "run").exists()
