"""Crop classifiers: crops, checkpoints, presets, a short real training run, and `mhyolo classify`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mhyolo.infer.crops import crop_boxes, square_windows
from mhyolo.errors import ConfigError, WeightsError
from mhyolo.infer.preprocess import PAD_VALUE


def test_a_box_at_the_border_gives_a_full_size_crop_with_the_margin_clipped() -> None:
    image = np.full((80, 100, 3), 200, np.uint8)
    boxes = np.array([[0, 0, 20, 20],  # top-left corner: its window [-10, -10, 30, 30] leaves the image
                      [40, 30, 60, 50],  # inside: window [30, 20, 70, 60]
                      [300, 300, 310, 310],  # wholly outside, beyond the bottom right
                      [-50, -50, -30, -30]])  # wholly outside, above the top left
    crops = crop_boxes(image, boxes, size=40, margin=0.5)  # side = 20 * (1 + 2 * 0.5) = 40: no resizing
    assert crops.shape == (4, 40, 40, 3)  # one crop per box, each full size
    corner = crops[0]
    assert (corner[:10, :, :] == PAD_VALUE).all() and (corner[:, :10, :] == PAD_VALUE).all()  # the clipped margin
    assert (corner[10:, 10:, :] == 200).all()  # the image where the window covers it, unstretched
    assert (crops[1] == 200).all()
    assert (crops[2] == PAD_VALUE).all() and (crops[3] == PAD_VALUE).all()
    np.testing.assert_allclose(square_windows(boxes[:2], 0.5), [[-10, -10, 30, 30], [30, 20, 70, 60]])


def test_crops_are_squares_on_the_long_side_and_resized() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[90:110, 60:140] = 255  # an 80 x 20 box: the window is an 80-px square, half of it the box
    crop = crop_boxes(image, np.array([[60, 90, 140, 110]]), size=32, margin=0.0)[0]
    assert crop.shape == (32, 32, 3)
    bright = crop[:, :, 0] > 127
    assert bright[16, :].all()  # the box spans the full width
    assert bright[:, 16].sum() == 8  # and a quarter of the height (20 / 80 of 32 pixels)


def test_presets_are_seed_002s_and_flags_override_them() -> None:
    from mhyolo.classify.train import load_classify_config

    one = load_classify_config("seed002-model1", {"data": "d.yaml"})
    two = load_classify_config("seed002-model2", {"data": "d.yaml"})
    assert (one.model, one.pool, one.optim, one.learning_rate, one.epochs, one.batch, one.imgsz) == \
        ("resnet26d", "max", "adam", 0.001, 5, 32, 224)
    assert (two.model, two.pool, two.optim, two.learning_rate, two.momentum) == ("resnet26d", "avg", "sgd", 0.01, 0.8)
    assert load_classify_config("seed002-model2", {"data": "d.yaml", "pool": "max"}).pool == "max"
    with pytest.raises(ConfigError, match=r"--preset 'nope': no such file .*not a shipped name \(.*seed002-model1"):
        load_classify_config("nope", {"data": "d.yaml"})


def test_a_preset_file_wins_over_the_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mhyolo.classify.train import load_classify_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed002-model1").write_text("epochs: 7\n", encoding="utf-8")
    assert load_classify_config("seed002-model1", {"data": "d.yaml"}).epochs == 7
    assert load_classify_config("seed002-model1.yaml", {"data": "d.yaml"}).epochs == 5  # no such file: shipped


def test_pretrained_weights_that_cannot_be_fetched_give_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    import huggingface_hub.constants as hub

    from mhyolo.classify.model import ClassifierSpec, build_classifier

    # offline, with empty caches: the weights cannot be found whatever this machine has cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as info:
        build_classifier(ClassifierSpec(arch="resnet26d", names=["a", "b"]), pretrained=True)
    assert "--pretrained" in str(info.value) and "resnet26d" in str(info.value) and "from scratch" in str(info.value)


def test_checkpoints_round_trip_and_a_detector_checkpoint_is_refused(tmp_path: Path) -> None:
    import torch

    from mhyolo.classify.backend import load_classifier
    from mhyolo.classify.checkpoint import save_classifier
    from mhyolo.classify.model import ClassifierSpec, build_classifier
    from mhyolo.model.weights import save_checkpoint
    from mhyolo.model.yolo import YoloModel

    spec = ClassifierSpec(arch="resnet26d", names=["a", "b", "c"], pool="max", imgsz=64)
    torch.manual_seed(0)
    net = build_classifier(spec).eval()
    path = save_classifier(tmp_path / "c.safetensors", net, spec, {"note": "x"})
    loaded = load_classifier(path)
    assert loaded.names == ["a", "b", "c"] and loaded.imgsz == 64 and loaded.spec.pool == "max"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = net(x).softmax(-1).numpy()
    np.testing.assert_allclose(loaded.probabilities(x), expected, atol=1e-6)
    detector = save_checkpoint(tmp_path / "d.safetensors", YoloModel("yolov5n", nc=1))
    with pytest.raises(WeightsError, match="a detector checkpoint, not a crop classifier"):
        load_classifier(detector)
    with pytest.raises(WeightsError, match="not found"):
        load_classifier(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def ball_slice(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.tiny_data import tiny_ball_dataset

    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("slice"), per_type_train=20, per_type_val=10)


@pytest.fixture(scope="module")
def trained(ball_slice: Path, tmp_path_factory: pytest.TempPathFactory, official_weights: Path) -> Path:
    from mhyolo.cli import main

    out = tmp_path_factory.mktemp("classify") / "run"
    code = main(["classify", "train", "--data", str(ball_slice), "--model", "yolov5n-backbone", "--imgsz", "96",
                 "--epochs", "4", "--batch", "16", "--optim", "adam", "--out", str(out), "--quiet"])
    assert code == 0
    return out


ACCURACY_FLOOR = 0.6  # 19 of the 31 val crops. Chance is 1/3: a classifier guessing at chance reaches 19 of 31 with
# probability 0.0013 (binomial tail), and this seeded run scores 0.84 here, so the floor separates learning from
# luck with room for numeric differences between machines.


def test_a_short_run_on_a_real_slice_learns_well_above_chance(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["best"]["val"]["crops"] == 31
    assert metrics["best"]["val"]["accuracy"] >= ACCURACY_FLOOR
    with (trained / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    assert max(float(r["val/accuracy"]) for r in rows) == pytest.approx(metrics["best"]["val"]["accuracy"], abs=1e-4)
    for name in ("curves.png", "results.png", "confusion_matrix.png", "weights/best.safetensors",
                 "weights/last.safetensors", "config.yaml"):
        assert (trained / name).is_file(), name


def test_classify_val_reports_accuracy_per_type_and_refuses_other_types(trained: Path, ball_slice: Path,
                                                                        tmp_path: Path, capsys) -> None:
    from mhyolo.cli import main

    assert main(["classify", "val", "--weights", str(trained / "weights/best.safetensors"), "--data", str(ball_slice),
                 "--json", "--plots", str(tmp_path)]) == 0
    scores = json.loads(capsys.readouterr().out)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert scores["accuracy"] == pytest.approx(metrics["best"]["val"]["accuracy"])
    assert set(scores["per_type"]) == {"basketball", "football", "tennis-ball"}
    assert np.asarray(scores["confusion_matrix"]).sum() == 31
    assert (tmp_path / "confusion_matrix.png").is_file()

    other = tmp_path / "other.yaml"
    other.write_text(ball_slice.read_text().replace("[basketball, football, tennis-ball]", "[a, b, c]")
                     .replace("path: .", f"path: {ball_slice.parent}"))
    assert main(["classify", "val", "--weights", str(trained / "weights/best.safetensors"), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "type ids would not line up" in err and str(other) in err
