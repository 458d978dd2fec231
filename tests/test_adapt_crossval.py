"""`mhyolo crossval --adapt`: the held-out source split by near-duplicate group, the adaptation half
given to `adapt` without its labels, the test half scored before and after, the pseudo-labels judged
against the real labels afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mhyolo.adapt.crossval import FoldAdaptSettings, adapt_fold, adapt_markdown, pseudo_label_quality, split_halves


def _tennis_fold(shared: Path, root: Path, official_weights: Path) -> Path:
    """A finished fold as `crossval` leaves it: tennis_icifx balls as COCO's class 32 in the COCO model's
    names, 3 train / 2 val images of the training side and 8 test images (two of them the same photo
    under two names: a near-duplicate group) held out; the COCO model as the fold's model."""
    from mhyolo.model.weights import load_model

    names = load_model(official_weights).names
    source = shared / "data" / "tennis_icifx"
    data = root / "data"
    picks = {"train": ("train", 3, 0), "val": ("valid", 2, 0), "test": ("test", 7, 0)}
    for split, (folder, count, start) in picks.items():
        (data / "images" / split).mkdir(parents=True)
        (data / "labels" / split).mkdir(parents=True)
        for image in sorted((source / folder / "images").glob("*.jpg"))[start:start + count]:
            shutil.copy(image, data / "images" / split / image.name)
            lines = (source / folder / "labels" / f"{image.stem}.txt").read_text().split("\n")
            (data / "labels" / split / f"{image.stem}.txt").write_text(
                "".join("32 " + line.split(" ", 1)[1] + "\n" for line in lines if line.strip()))
    first = sorted((data / "images" / "test").glob("*.jpg"))[0]
    shutil.copy(first, data / "images" / "test" / f"copy_{first.name}")
    shutil.copy(data / "labels" / "test" / f"{first.stem}.txt", data / "labels" / "test" / f"copy_{first.stem}.txt")
    (data / "data.yaml").write_text(json.dumps({"path": ".", "train": "images/train", "val": "images/val",
                                                "test": "images/test", "names": names}))
    (data / "fold.json").write_text(json.dumps({"types_in_training": [names[32]]}))
    (root / "score.json").write_text(json.dumps({"weights": str(official_weights), "imgsz": 128}))
    return root


def test_halves_keep_near_duplicates_together_and_are_seeded(shared: Path, tmp_path: Path) -> None:
    images = sorted((shared / "data" / "tennis_icifx" / "test" / "images").glob("*.jpg"))[:9]
    twin = tmp_path / f"twin_{images[0].name}"
    shutil.copy(images[0], twin)
    paths = [*images, twin]
    adapt, test = split_halves(paths, seed=0, bits=6, progress=False)
    assert sorted(adapt + test) == sorted(paths) and not set(adapt) & set(test)
    assert abs(len(adapt) - len(test)) <= 2  # half, up to one group of two
    assert (images[0] in adapt) == (twin in adapt)  # a photo and its copy on one side
    assert split_halves(paths, seed=0, bits=6, progress=False) == (adapt, test)
    assert any(split_halves(paths, seed=s, bits=6, progress=False)[0] != adapt for s in range(1, 6))


def test_pseudo_label_quality_is_precision_and_recall_at_iou_half(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes(b"")
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n")
    (labels / "b.txt").write_text("1 0.3 0.3 0.2 0.2\n")
    pseudo = tmp_path / "pseudo"
    (pseudo / "scores").mkdir(parents=True)
    # image a: one right box (IoU 1), one 0.2 away (IoU 0); image b: a box of another type on its ball
    (pseudo / "scores" / "a.txt").write_text("0 0.5 0.5 0.2 0.2 0.9\n0 0.8 0.8 0.1 0.1 0.7\n")
    (pseudo / "scores" / "b.txt").write_text("2 0.31 0.3 0.2 0.2 0.6\n")
    quality = pseudo_label_quality(pseudo, {"a": str(tmp_path / "images" / "a.jpg"),
                                            "b": str(tmp_path / "images" / "b.jpg")})
    assert (quality["kept"], quality["real"], quality["true_positives"]) == (3, 3, 2)
    assert quality["precision"] == pytest.approx(2 / 3) and quality["recall"] == pytest.approx(2 / 3)


def test_one_fold_adapts_on_one_half_and_scores_the_other(shared: Path, tmp_path: Path,
                                                          official_weights: Path) -> None:
    fold = _tennis_fold(shared, tmp_path / "tennis", official_weights)
    settings = FoldAdaptSettings(epochs=1, sizes=[128, "native"], progress=False,
                                 options={"batch": 4, "workers": 0, "classes": [32], "keep": 0.3})
    result = adapt_fold(fold, settings)
    folder = fold / "adapt"
    split = json.loads((folder / "split.json").read_text())
    assert len(split["adapt"]) + len(split["test"]) == 8 and not set(split["adapt"]) & set(split["test"])
    # the adaptation never sees the held-out labels: its labelled data has no test split
    labelled = json.loads(json.dumps(__import__("yaml").safe_load((folder / "labelled.yaml").read_text())))
    assert "test" not in labelled and labelled["train"] == "images/train"
    assert sorted(p.name for p in (folder / "target").iterdir()) == sorted(Path(p).name for p in split["adapt"])
    assert (folder / "run" / "model.safetensors").is_file()
    scores = result["scores"]
    assert set(scores) == {"before", "round 1"} and set(scores["before"]) == {"128", "native"}
    for row in (scores["before"]["128"], scores["round 1"]["native"]):
        assert row["images"] == len(split["test"]) and 0.0 <= row["map50"] <= 1.0
    real = sum(len([l for l in Path(p.replace("/images/", "/labels/")).with_suffix(".txt").read_text().splitlines()
                    if l.strip()]) for p in split["adapt"])
    quality = result["pseudo_labels"]["round 1"]
    assert quality["real"] == real and quality["true_positives"] <= min(quality["kept"], real)
    assert adapt_fold(fold, settings) == result  # done: read back, not run again
    table = adapt_markdown({"tennis": result})
    assert "| tennis | 128 | before |" in table and "| **mean** | native | round 1 |" in table
    assert np.isfinite(result["scores"]["round 1"]["128"]["map50"])


def test_the_folds_model_is_found_from_any_working_folder(tmp_path: Path) -> None:
    from mhyolo.adapt.crossval import fold_weights
    from mhyolo.errors import DataError

    fold = tmp_path / "cv" / "seed"
    best = fold / "train" / "weights" / "best.safetensors"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"x")
    assert fold_weights(fold, "runs/cv/seed/train/weights/best.safetensors") == best  # as the crossval wrote it
    assert fold_weights(fold, str(best)) == best
    with pytest.raises(DataError, match="not there"):
        fold_weights(fold, "runs/cv/seed/train/weights/last.safetensors")


def test_a_fold_given_as_a_relative_folder_writes_datasets_that_load(shared: Path, tmp_path: Path,
                                                                    official_weights: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`mhyolo crossval --out runs/...` hands relative fold folders down: the test half's data.yaml
    must not name its folder relative to itself."""
    from mhyolo.adapt.crossval import prepare_fold
    from mhyolo.data.pairing import split_images
    from mhyolo.data.spec import load_data_spec

    _tennis_fold(shared, tmp_path / "runs" / "cv" / "tennis", official_weights)
    monkeypatch.chdir(tmp_path)
    split = prepare_fold(Path("runs/cv/tennis"), FoldAdaptSettings(progress=False))
    test = load_data_spec(tmp_path / "runs" / "cv" / "tennis" / "adapt" / "test.yaml")
    assert sorted(map(str, split_images(test, "test"))) == sorted(split["test"]) and len(split["test"]) >= 3
    labelled = load_data_spec(tmp_path / "runs" / "cv" / "tennis" / "adapt" / "labelled.yaml")
    assert len(split_images(labelled, "train")) == 3 and "test" not in labelled.splits
