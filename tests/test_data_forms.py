"""data.yaml in every form YOLOv5 / ultralytics accept, images that share a label, and datasets reached through links.

Small datasets are laid out in tmp from a few real seed_balls images (copied or linked).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mhyolo.cli import main
from mhyolo.data.build import build_dataset
from mhyolo.data.dataset import YoloDataset
from mhyolo.data.labels import read_labels, write_labels
from mhyolo.data.recipe import recipe_from_dict
from mhyolo.data.spec import label_path_for, load_data_spec
from mhyolo.data.verify import verify_dataset
from mhyolo.deploy.calibration import calibration_files
from mhyolo.errors import DataError
from mhyolo.paths import absolute_path

CLASSES = ["basketball", "football", "tennis-ball"]
IDENTITY = {name: name for name in CLASSES}
# two images of each type, chosen so that no two are near-duplicates
STEMS = {"train": ["basketball_0140", "basketball_0141", "football_0070", "football_0071"],
         "valid": ["tennis_0000", "tennis_0001"]}


@pytest.fixture(scope="module")
def seed(shared: Path) -> Path:
    folder = shared / "data" / "seed_balls"
    if not all((folder / "images" / f"{s}.jpg").is_file() for stems in STEMS.values() for s in stems):
        pytest.skip(f"seed_balls images absent from {folder}")
    return folder


def lay_out(seed: Path, root: Path, link_images: bool = False) -> Path:
    """A Roboflow-style dataset (train/valid, images + labels) of real images, copied or linked."""
    for split, stems in STEMS.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for stem in stems:
            target = root / split / "images" / f"{stem}.jpg"
            if link_images:
                target.symlink_to(seed / "images" / f"{stem}.jpg")
            else:
                shutil.copy(seed / "images" / f"{stem}.jpg", target)
            shutil.copy(seed / "labels" / f"{stem}.txt", root / split / "labels" / f"{stem}.txt")
    return root


def write_yaml(file: Path, **data) -> Path:
    file.write_text(yaml.safe_dump({**data, "names": data.get("names", CLASSES)}, sort_keys=False))
    return file


def counts(report) -> dict[str, int]:
    return {split: s.images for split, s in report.splits.items()}


# -- one label file, two images ------------------------------------------------------------------

def test_images_sharing_a_label_are_reported_and_left_out_everywhere(seed: Path, tmp_path: Path, capsys):
    root = lay_out(seed, tmp_path / "ds")
    images = root / "train" / "images"
    Image.open(images / "basketball_0140.jpg").save(images / "basketball_0140.png")  # same stem, one label
    Image.open(images / "football_0070.jpg").save(images / "negative.png")  # no label: two negatives do not clash
    Image.open(images / "football_0070.jpg").save(images / "negative.bmp")
    data = write_yaml(root / "data.yaml", train="train/images", val="valid/images")
    jpg, png = images / "basketball_0140.jpg", images / "basketball_0140.png"

    report = verify_dataset(data, leak_threshold=None, progress=False)
    clashes = [p for p in report.problems if p.kind == "same-stem"]
    assert len(clashes) == 1
    assert clashes[0].file == str(root / "train" / "labels" / "basketball_0140.txt")
    assert str(jpg) in clashes[0].reason and str(png) in clashes[0].reason and "neither is used" in clashes[0].reason
    train = report.splits["train"]
    assert (train.images, train.negatives, train.same_stem) == (5, 2, 2)

    assert main(["data", "verify", str(data), "--no-leak-check", "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert f"same-stem: {root / 'train' / 'labels' / 'basketball_0140.txt'}" in printed and str(png) in printed

    rec = recipe_from_dict({"classes": CLASSES, "sources": [
        {"path": str(root), "name": "ds", "classes": IDENTITY, "negatives": "all"}]})
    built = build_dataset(rec, tmp_path / "out", progress=False)
    drops = sorted(d.file for d in built.drops if d.stage == "same-stem")
    assert drops == [str(jpg), str(png)]
    assert all(str(jpg) in d.reason and str(png) in d.reason for d in built.drops if d.stage == "same-stem")
    origins = {Path(i.origin).name for i in built.images}
    assert origins == {"basketball_0141.jpg", "football_0070.jpg", "football_0071.jpg", "tennis_0000.jpg",
                       "tennis_0001.jpg", "negative.png", "negative.bmp"}
    assert built.sources["ds"].images_seen == len(built.images) + 2

    with pytest.raises(DataError) as error:
        YoloDataset(load_data_spec(data), "train", 64)
    assert str(jpg) in str(error.value) and str(png) in str(error.value)
    assert len(YoloDataset(load_data_spec(data), "val", 64)) == 2  # the other split is unaffected


# -- data.yaml forms -----------------------------------------------------------------------------

def test_split_as_a_list_of_folders(seed: Path, tmp_path: Path, capsys):
    root = lay_out(seed, tmp_path / "ds")
    data = write_yaml(root / "data.yaml", path=".", train=["train/images", "valid/images"], val=["valid/images"])
    report = verify_dataset(data, leak_threshold=None, progress=False)
    assert counts(report) == {"train": 6, "val": 2}
    assert [p.kind for p in report.problems] == ["shared-image"]  # valid's images are in both splits
    assert len(YoloDataset(load_data_spec(data), "train", 64)) == 6

    only = write_yaml(root / "list.yaml", train=["train/images"], val="valid/images")
    assert main(["data", "verify", str(only), "--no-progress"]) == 0
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows == ["split", "train", "val"]


@pytest.mark.parametrize("form", ["dot-relative", "root-relative", "absolute"])
def test_split_as_a_txt_list(seed: Path, tmp_path: Path, form: str):
    root = lay_out(seed, tmp_path / "ds")
    (root / "lists").mkdir()
    chosen = [root / "train" / "images" / f"{s}.jpg" for s in STEMS["train"][:3]]
    if form == "dot-relative":  # `./` lines start at the list's folder, as in YOLOv5 and ultralytics
        lines = [f"./../train/images/{p.name}" for p in chosen]
    elif form == "root-relative":  # other relative lines start at the dataset root
        lines = [f"train/images/{p.name}" for p in chosen]
    else:
        lines = [str(p) for p in chosen]
    (root / "lists" / "train.txt").write_text("# three of four\n" + "\n".join(lines) + "\n\n")
    data = write_yaml(root / "data.yaml", path=".", train="lists/train.txt", val="valid/images")
    report = verify_dataset(data, leak_threshold=None, progress=False)
    assert report.ok, report.problems
    assert counts(report) == {"train": 3, "val": 2}
    assert report.splits["train"].boxes == 3 and report.splits["train"].orphan_labels == 0  # a list picks on purpose
    spec = load_data_spec(data)
    dataset = YoloDataset(spec, "train", 64)
    assert [p.name for p in dataset.files] == [p.name for p in chosen]
    assert [len(labels) for labels in dataset.labels] == [1, 1, 1]
    assert len(calibration_files(data, count=10)) == 3


def test_txt_list_line_naming_nothing_is_reported_with_its_line(seed: Path, tmp_path: Path):
    root = lay_out(seed, tmp_path / "ds")
    (root / "train.txt").write_text("train/images/basketball_0140.jpg\ntrain/images/gone.jpg\nnotes.md\n")
    data = write_yaml(root / "data.yaml", train="train.txt")
    report = verify_dataset(data, progress=False)
    assert {(p.kind, p.file, p.line) for p in report.problems} == {("missing", str(root / "train.txt"), 2),
                                                                  ("not-image", str(root / "train.txt"), 3)}
    assert report.splits["train"].images == 1
    with pytest.raises(DataError, match=r"train\.txt:2: image .*gone\.jpg does not exist"):
        YoloDataset(load_data_spec(data), "train", 64)


@pytest.mark.parametrize("names", [CLASSES, {0: "basketball", 1: "football", 2: "tennis-ball"},
                                   {"2": "tennis-ball", "0": "basketball", "1": "football"}])
def test_names_as_list_or_mapping(seed: Path, tmp_path: Path, names):
    root = lay_out(seed, tmp_path / "ds")
    spec = load_data_spec(write_yaml(root / "data.yaml", train="train/images", names=names))
    assert spec.names == CLASSES and spec.nc == 3
    assert list(spec.splits) == ["train"]


def test_names_from_nc_alone_and_bad_names(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "a.yaml").write_text("train: images\nnc: 2\n")
    assert load_data_spec(tmp_path / "a.yaml").names == ["class0", "class1"]
    (tmp_path / "b.yaml").write_text("train: images\nnames: {0: a, 2: c}\n")
    with pytest.raises(DataError, match=r"ids must be 0\.\.1 without gaps, got \[0, 2\]"):
        load_data_spec(tmp_path / "b.yaml")


@pytest.mark.parametrize("where", ["absolute", "relative", "none", "validation-key"])
def test_root_absolute_relative_or_absent(seed: Path, tmp_path: Path, where: str):
    root = lay_out(seed, tmp_path / "data" / "ds")
    elsewhere = tmp_path / "configs"
    elsewhere.mkdir()
    splits = {"train": "train/images", "val": "valid/images"}
    if where == "absolute":
        data = write_yaml(elsewhere / "ds.yaml", path=str(root), **splits)
    elif where == "relative":  # relative to the yaml's folder, wherever the command runs
        data = write_yaml(elsewhere / "ds.yaml", path="../data/ds", **splits)
    elif where == "none":
        data = write_yaml(root / "data.yaml", **splits)
    else:
        data = write_yaml(root / "data.yaml", train="train/images", validation="valid/images")
    spec = load_data_spec(data)
    assert spec.root.resolve() == root.resolve()
    assert counts(verify_dataset(data, progress=False)) == {"train": 4, "val": 2}


@pytest.mark.parametrize("value, form", [
    ("http://example.com/balls.zip", "URL"),
    ("images/*.jpg", "glob pattern"),
    ("notes.json", ".json file"),
    ({"folder": "images"}, "a mapping"),
    (3, "a number"),
    ([["images"]], "a nested list"),
])
def test_unread_forms_are_refused_by_name(tmp_path: Path, value, form: str):
    (tmp_path / "images").mkdir()
    (tmp_path / "notes.json").write_text("{}")
    data = tmp_path / "data.yaml"
    data.write_text(f"names: [ball]\nval: images\ntrain: {json.dumps(value)}\n")  # JSON is YAML on one line
    with pytest.raises(DataError) as error:
        load_data_spec(data)
    message = str(error.value)
    assert form in message and "'train'" in message and f"{data}:3" in message


def test_missing_entry_names_the_yaml_key_and_line(seed: Path, tmp_path: Path):
    root = lay_out(seed, tmp_path / "ds")
    data = root / "data.yaml"
    data.write_text("names: [basketball, football, tennis-ball]\ntrain:\n  - train/images\n  - extra/images\n"
                    "val: valid/images\n")
    report = verify_dataset(data, progress=False)
    missing = [p for p in report.problems if p.kind == "missing"]
    assert [(p.file, p.line) for p in missing] == [(str(data), 4)]
    assert "'train' entry 'extra/images'" in missing[0].reason
    assert report.splits["train"].images == 4  # the entries that exist are still checked
    with pytest.raises(DataError, match=rf"{data}:4: 'train' entry 'extra/images'"):
        YoloDataset(load_data_spec(data), "train", 64)
    rec = recipe_from_dict({"classes": CLASSES, "sources": [{"path": str(root), "name": "ds", "classes": IDENTITY}]})
    with pytest.raises(DataError, match=rf"{data}:4: 'train' entry 'extra/images'"):
        build_dataset(rec, tmp_path / "out", progress=False)


def test_recipe_reads_every_split_form(seed: Path, tmp_path: Path):
    root = lay_out(seed, tmp_path / "ds")
    (root / "val.txt").write_text("./valid/images/tennis_0000.jpg\n")
    write_yaml(root / "data.yaml", train=["train/images"], val="val.txt", test="valid/images/tennis_0001.jpg")
    rec = recipe_from_dict({"classes": CLASSES, "sources": [{"path": str(root), "name": "ds", "classes": IDENTITY}]})
    report = build_dataset(rec, tmp_path / "out", progress=False)
    assert sorted(Path(i.origin).name for i in report.images) == sorted(f"{s}.jpg" for v in STEMS.values() for s in v)
    assert report.sources["ds"].images_seen == 6


# -- symbolic links ------------------------------------------------------------------------------

def _outputs(out: Path) -> dict[str, bytes]:
    """Every file a build wrote under images/ and labels/, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parts[len(out.parts)] in ("images", "labels")}


def test_linked_data_root_builds_the_same_dataset(shared: Path, tmp_path: Path):
    real = shared / "data"
    if not (real / "seed_balls" / "data.yaml").is_file() or not (real / "tennis_icifx" / "data.yaml").is_file():
        pytest.skip(f"ball data absent from {real}")
    link = tmp_path / "linked-data"
    link.symlink_to(real.resolve(), target_is_directory=True)

    def recipe(data: Path):
        return recipe_from_dict({"classes": CLASSES, "seed": 1, "sources": [
            {"path": str(data / "seed_balls"), "name": "seed", "classes": IDENTITY,
             "sample": {"basketball": 3, "football": 3, "tennis-ball": "all"}},
            {"path": str(data / "tennis_icifx"), "name": "icifx", "splits": ["val"],
             "classes": {"tennis-ball": "tennis-ball"}}]})

    direct = build_dataset(recipe(real), tmp_path / "direct", progress=False)
    linked = build_dataset(recipe(link), tmp_path / "linked", progress=False)
    assert _outputs(tmp_path / "linked") == _outputs(tmp_path / "direct")
    assert len(linked.duplicates) == len(direct.duplicates) == 7
    assert linked.counts() == direct.counts() and linked.drop_counts() == direct.drop_counts()
    assert [(i.file, i.split, i.group) for i in linked.images] == [(i.file, i.split, i.group) for i in direct.images]
    assert all(i.origin.startswith(str(link)) for i in linked.images)  # reported as the user named them
    assert linked.verify["ok"]


def test_linked_dataset_folder_split_folder_and_images(seed: Path, tmp_path: Path):
    real = lay_out(seed, tmp_path / "real")
    write_yaml(real / "data.yaml", train="../train/images", val="../valid/images")  # Roboflow's stray ../
    expected = counts(verify_dataset(real / "data.yaml", progress=False))
    assert expected == {"train": 4, "val": 2}

    # the whole dataset folder is a link (and `..` in its yaml walks from the target)
    folder_link = tmp_path / "elsewhere" / "ds"
    folder_link.parent.mkdir()
    folder_link.symlink_to(real, target_is_directory=True)
    assert counts(verify_dataset(folder_link / "data.yaml", progress=False)) == expected

    # the images folder of a split is a link to a pool elsewhere; labels stay beside the link
    pooled = lay_out(seed, tmp_path / "pooled")
    pool = tmp_path / "pool"
    shutil.move(pooled / "train" / "images", pool)
    (pooled / "train" / "images").symlink_to(pool, target_is_directory=True)
    write_yaml(pooled / "data.yaml", train="train/images", val="valid/images")
    report = verify_dataset(pooled / "data.yaml", progress=False)
    assert report.ok and counts(report) == expected and report.splits["train"].boxes == 4
    assert [len(labels) for labels in YoloDataset(load_data_spec(pooled / "data.yaml"), "train", 64).labels] == [1] * 4

    # every image is a link to the shared file; its label is the one beside the link (here: boxes half as wide)
    linked = lay_out(seed, tmp_path / "linked", link_images=True)
    for label in linked.rglob("labels/*.txt"):
        boxes, _ = read_labels(label)
        boxes[:, 3] /= 2
        write_labels(label, boxes)
    write_yaml(linked / "data.yaml", train="train/images", val="valid/images")
    report = verify_dataset(linked / "data.yaml", progress=False)
    assert report.ok and counts(report) == expected and report.splits["train"].boxes == 4

    for name, folder in (("out-real", real), ("out-link", folder_link)):
        rec = recipe_from_dict({"classes": CLASSES, "sources": [{"path": str(folder), "name": "a", "classes": IDENTITY}]})
        assert len(build_dataset(rec, tmp_path / name, progress=False).images) == 6
    assert _outputs(tmp_path / "out-link") == _outputs(tmp_path / "out-real")
    rec = recipe_from_dict({"classes": CLASSES, "sources": [{"path": str(linked), "name": "a", "classes": IDENTITY}]})
    via_images = build_dataset(rec, tmp_path / "out-b", progress=False)
    assert len(via_images.images) == 6
    for img in via_images.images:  # bytes of the link's target, label from beside the link
        assert os.path.islink(img.origin)
        assert (tmp_path / "out-b" / img.file).read_bytes() == Path(img.origin).resolve().read_bytes()
        written, _ = read_labels(tmp_path / "out-b" / "labels" / img.split / Path(img.file).with_suffix(".txt").name)
        beside, _ = read_labels(label_path_for(Path(img.origin)))
        shared_label, _ = read_labels(seed / "labels" / f"{Path(img.origin).stem}.txt")
        np.testing.assert_allclose(written[:, 1:], beside[:, 1:], atol=1e-6)
        assert not np.allclose(written[:, 3], shared_label[:, 3])


def test_absolute_path_keeps_links_and_walks_dot_dot_from_the_target(tmp_path: Path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "lnk").symlink_to(tmp_path / "b" / "c", target_is_directory=True)
    assert absolute_path("lnk/images", tmp_path / "a") == tmp_path / "a" / "lnk" / "images"
    assert absolute_path("lnk/../x/images", tmp_path / "a") == (tmp_path / "b").resolve() / "x" / "images"


def test_image_reached_twice_is_read_once(seed: Path, tmp_path: Path):
    root = lay_out(seed, tmp_path / "ds")
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    data = write_yaml(root / "data.yaml", train=["train/images", str(alias / "train" / "images")])
    report = verify_dataset(data, progress=False)
    assert report.ok and counts(report) == {"train": 4}
