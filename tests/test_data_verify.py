"""Verification and build behaviour on a synthetic source with every kind of bad file (no shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mhyolo.cli import main
from mhyolo.data.build import build_dataset
from mhyolo.data.dedup import group_ids, near_pairs
from mhyolo.data.recipe import load_recipe, recipe_from_dict
from mhyolo.data.verify import verify_dataset
from mhyolo.errors import ConfigError, DataError

GOOD = "0 0.5 0.5 0.2 0.2\n"
# image stem -> (label text or None for no label file, bad line number or 0)
BAD_LABELS = {
    "polygon": ("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.1 0.3 0.3\n", 2),
    "unknown_class": ("5 0.5 0.5 0.1 0.1\n", 1),
    "out_of_range": ("0 0.5 0.5 0.1 0.1\n\n0 1.2 0.5 0.1 0.1\n", 3),
    "zero_size": ("1 0.5 0.5 0 0.1\n", 1),
    "negative_size": ("1 0.5 0.5 -0.1 0.1\n", 1),
    "non_numeric": ("0 0.5 abc 0.1 0.1\n", 1),
}


def save_image(path: Path, seed: int) -> None:
    """A distinct picture: random 8x8 blocks scaled up (distinct perceptual hashes per seed)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((96, 96), Image.NEAREST).save(path, quality=95)


def make_source(root: Path, n_good: int = 6, with_bad: bool = True, names=("a", "b")) -> Path:
    """A flat YOLO source: good images of class 0/1, plus (optionally) one file of each bad kind."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": list(names)}))
    for i in range(n_good):
        save_image(root / "images" / f"good{i:02d}.jpg", i)
        (root / "labels" / f"good{i:02d}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.2\n")
    if with_bad:
        for k, (stem, (text, _)) in enumerate(BAD_LABELS.items()):
            save_image(root / "images" / f"{stem}.jpg", 100 + k)
            (root / "labels" / f"{stem}.txt").write_text(text)
        save_image(root / "images" / "truncated.jpg", 200)
        data = (root / "images" / "truncated.jpg").read_bytes()
        (root / "images" / "truncated.jpg").write_bytes(data[: len(data) // 2])
        (root / "labels" / "truncated.txt").write_text(GOOD)
        (root / "labels" / "orphan.txt").write_text(GOOD)
        save_image(root / "images" / "negative.jpg", 300)  # no label file: a negative, not a problem
    return root


def source_recipe(src: Path, **source) -> dict:
    return {"classes": ["basketball", "football"],
            "sources": [{"path": str(src), "name": "syn", "classes": {"a": "basketball", "b": "football"}, **source}]}


def test_verify_reports_every_bad_file_by_name_and_line(tmp_path):
    src = make_source(tmp_path / "src")
    report = verify_dataset(src / "data.yaml", progress=False)
    assert not report.ok
    labels = {(Path(p.file).stem, p.line) for p in report.problems if p.kind == "label"}
    assert labels == {(stem, line) for stem, (_, line) in BAD_LABELS.items()}
    reasons = {Path(p.file).stem: p.reason for p in report.problems if p.kind == "label"}
    assert "polygon" in reasons["polygon"] and "out of range" in reasons["unknown_class"]
    assert "outside" in reasons["out_of_range"] and "non-positive" in reasons["zero_size"]
    assert "non-positive" in reasons["negative_size"] and "not a number" in reasons["non_numeric"]
    images = [p for p in report.problems if p.kind == "image"]
    assert [Path(p.file).name for p in images] == ["truncated.jpg"] and "truncated" in images[0].reason
    orphans = [p for p in report.problems if p.kind == "orphan-label"]
    assert [Path(p.file).name for p in orphans] == ["orphan.txt"]
    assert report.count("shared-folder") == 1  # train and val are one folder
    train = report.splits["train"]
    assert (train.images, train.negatives, train.bad_images, train.bad_labels, train.orphan_labels) == (7, 1, 1, 6, 1)
    assert train.boxes == 6


def test_verify_finds_leak_across_splits(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for i in range(4):
        save_image(root / "images" / "train" / f"t{i}.jpg", i)
    save_image(root / "images" / "val" / "v0.jpg", 2)  # same picture as t2
    save_image(root / "images" / "val" / "v1.jpg", 50)
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": ["a"]}))
    report = verify_dataset(root / "data.yaml", progress=False)
    leaks = [p for p in report.problems if p.kind == "leak"]
    assert [Path(p.file).name for p in leaks] == ["v0.jpg"] and "t2.jpg" in leaks[0].reason
    assert verify_dataset(root / "data.yaml", leak_threshold=None, progress=False).ok


def test_build_leaves_out_and_reports_bad_files(tmp_path):
    src = make_source(tmp_path / "src")
    rec = recipe_from_dict(source_recipe(src, negatives="all"))
    report = build_dataset(rec, tmp_path / "out", progress=False)
    verify_drops = {Path(d.file).stem: d for d in report.drops if d.stage == "verify"}
    assert set(verify_drops) == set(BAD_LABELS) | {"truncated"}
    for stem, (_, line) in BAD_LABELS.items():
        assert verify_drops[stem].line == line and verify_drops[stem].file.endswith(f"{stem}.txt")
    assert [Path(d.file).name for d in report.drops if d.stage == "orphan-label"] == ["orphan.txt"]
    origins = sorted(Path(i.origin).name for i in report.images)
    assert origins == sorted([f"good{i:02d}.jpg" for i in range(6)] + ["negative.jpg"])
    summary = report.sources["syn"]
    assert summary.images_seen == len(report.images) + sum(n for k, n in summary.drops.items() if k != "orphan-label")
    assert report.drop_counts() == {"orphan-label": 1, "verify": 7}
    negatives = [i for i in report.images if i.cls == "negative"]
    assert len(negatives) == 1 and (tmp_path / "out" / "labels" / negatives[0].split /
                                    Path(negatives[0].file).with_suffix(".txt").name).read_text() == ""
    assert report.verify["ok"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["drop_counts"] == {"orphan-label": 1, "verify": 7}
    assert "polygon.txt:2" in (tmp_path / "out" / "report.md").read_text()


def test_copies_in_one_source_stay_in_one_split(tmp_path):
    src = make_source(tmp_path / "src", n_good=12, with_bad=False)
    good = (src / "images" / "good03.jpg").read_bytes()
    for name in ("copy_a", "copy_b"):
        (src / "images" / f"{name}.jpg").write_bytes(good)
        (src / "labels" / f"{name}.txt").write_text("1 0.4 0.4 0.1 0.1\n")
    copies = {"good03.jpg", "copy_a.jpg", "copy_b.jpg"}
    for seed in range(6):
        rec = recipe_from_dict({**source_recipe(src), "seed": seed, "val_fraction": 0.5})
        report = build_dataset(rec, tmp_path / f"out{seed}", progress=False, verify=False)
        splits = {i.split for i in report.images if Path(i.origin).name in copies}
        assert len(splits) == 1, f"seed {seed}: copies split over {splits}"
        assert len({i.group for i in report.images if Path(i.origin).name in copies}) == 1
        assert len(report.images) == 14


def test_cross_source_copy_kept_once(tmp_path):
    first = make_source(tmp_path / "one", n_good=4, with_bad=False)
    second = make_source(tmp_path / "two", n_good=0, with_bad=False)
    save_image(second / "images" / "other.jpg", 77)
    (second / "labels" / "other.txt").write_text(GOOD)
    (second / "images" / "same.jpg").write_bytes((first / "images" / "good01.jpg").read_bytes())
    (second / "labels" / "same.txt").write_text(GOOD)
    mapping = {"a": "basketball", "b": "football"}
    rec = recipe_from_dict({"classes": ["basketball", "football"], "sources": [
        {"path": str(first), "name": "one", "classes": mapping},
        {"path": str(second), "name": "two", "classes": mapping}]})
    report = build_dataset(rec, tmp_path / "out", progress=False)
    assert [(Path(d.dropped).name, Path(d.kept).name, d.distance) for d in report.duplicates] == \
        [("same.jpg", "good01.jpg", 0)]
    assert sorted(Path(i.origin).name for i in report.images if i.source == "two") == ["other.jpg"]


def test_mixed_images_majority_or_skip(tmp_path):
    src = make_source(tmp_path / "src", n_good=4, with_bad=False)
    save_image(src / "images" / "mixed.jpg", 40)
    (src / "labels" / "mixed.txt").write_text("1 0.2 0.2 0.1 0.1\n1 0.6 0.6 0.1 0.1\n0 0.8 0.8 0.1 0.1\n")
    majority = build_dataset(recipe_from_dict(source_recipe(src)), tmp_path / "m", progress=False)
    mixed = [i for i in majority.images if Path(i.origin).name == "mixed.jpg"]
    assert len(mixed) == 1 and mixed[0].cls == "football" and len(mixed[0].boxes) == 3
    assert majority.sources["syn"].mixed == 1
    skipped = build_dataset(recipe_from_dict({**source_recipe(src), "mixed": "skip"}), tmp_path / "s", progress=False)
    assert not [i for i in skipped.images if Path(i.origin).name == "mixed.jpg"]
    assert [Path(d.file).name for d in skipped.drops if d.stage == "mixed"] == ["mixed.jpg"]


def test_recipe_errors_name_the_problem(tmp_path, monkeypatch):
    src = make_source(tmp_path / "src", n_good=4, with_bad=False)
    unmapped = source_recipe(src)
    unmapped["sources"][0]["classes"] = {"a": "basketball"}
    with pytest.raises(ConfigError, match="not mapped: b"):
        build_dataset(recipe_from_dict(unmapped), tmp_path / "o1", progress=False)
    with pytest.raises(ConfigError, match="asks for 5 'basketball' images but only 2"):
        build_dataset(recipe_from_dict(source_recipe(src, sample={"basketball": 5})), tmp_path / "o2",
                      progress=False)
    with pytest.raises(ConfigError, match="not a target class"):
        recipe_from_dict(source_recipe(src, sample={"volleyball": 1}))
    with pytest.raises(ConfigError, match="unknown key"):
        recipe_from_dict({**source_recipe(src), "sed": 1})

    monkeypatch.setenv("MHYOLO_SHARED", str(tmp_path))
    text = yaml.safe_dump({**source_recipe("${shared}/src"), "seed": 3})
    (tmp_path / "r" / "deep").mkdir(parents=True)
    (tmp_path / "r" / "deep" / "recipe.yaml").write_text(text)
    rec = load_recipe(tmp_path / "r" / "deep" / "recipe.yaml", seed=9)
    assert rec.source_path(rec.sources[0]) == src.resolve() and rec.seed == 9
    relative = yaml.safe_dump(source_recipe("../../src"))
    (tmp_path / "r" / "deep" / "rel.yaml").write_text(relative)
    rel = load_recipe(tmp_path / "r" / "deep" / "rel.yaml")
    assert rel.source_path(rel.sources[0]) == src.resolve()
    bad = recipe_from_dict(source_recipe("${home}/src"))
    with pytest.raises(ConfigError, match="unknown placeholder"):
        bad.source_path(bad.sources[0])


def test_near_duplicate_groups_chain():
    base = np.zeros(64, bool)
    a, b, c, far = base.copy(), base.copy(), base.copy(), ~base
    b[:3] = True  # a-b: 3 bits
    c[:6] = True  # b-c: 3 bits, a-c: 6 bits
    hashes = np.stack([a, b, c, far])
    pairs = near_pairs(hashes, threshold=3)
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 1), (1, 2)]
    assert group_ids(4, pairs) == [0, 0, 0, 3]


def test_cli_build_overwrite_and_verify(tmp_path, capsys):
    src = make_source(tmp_path / "src", n_good=8, with_bad=False)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(source_recipe(src)))
    out = tmp_path / "out"
    assert main(["data", "build", str(recipe_file), "--out", str(out), "--seed", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "basketball" in printed and "total" in printed
    first = sorted(p.name for p in (out / "images" / "train").iterdir())
    assert json.loads((out / "report.json").read_text())["seed"] == 4

    (out / "notes.txt").write_text("keep me")
    assert main(["data", "build", str(recipe_file), "--out", str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    (out / "images" / "train" / "stale.jpg").write_bytes(b"old")
    assert main(["data", "build", str(recipe_file), "--out", str(out), "--seed", "4", "--overwrite",
                 "--no-progress"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == first

    capsys.readouterr()
    assert main(["data", "verify", str(out / "data.yaml"), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    bad = make_source(tmp_path / "bad")
    assert main(["data", "verify", str(bad / "data.yaml"), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "polygon.txt:2" in printed and "truncated.jpg" in printed and "orphan.txt" in printed


def test_build_refuses_file_as_output(tmp_path):
    src = make_source(tmp_path / "src", n_good=2, with_bad=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        build_dataset(recipe_from_dict(source_recipe(src)), tmp_path / "file", progress=False)
