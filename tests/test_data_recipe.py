"""Recipe builds on slices of the real ball data in ../shared/data."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from mhyolo.data.build import build_dataset
from mhyolo.data.labels import read_labels
from mhyolo.data.recipe import load_recipe, recipe_from_dict
from mhyolo.data.spec import label_path_for
from mhyolo.data.verify import verify_dataset
from mhyolo.paths import repo_root, shared_dir

CLASSES = ["basketball", "football", "tennis-ball"]
SEED_MAP = {"basketball": "basketball", "football": "football", "tennis-ball": "tennis-ball"}
BASKET_MAP = {"Basketball": "basketball", "Goal": "basketball", "rebound_hit": "basketball",
              "Player": None, "hoop": None}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    folder = shared_dir() / "data"
    needed = ["seed_balls", "tennis_icifx", "basketball_f2rlv", "football_worldcup"]
    if not all((folder / name / "data.yaml").is_file() for name in needed):
        pytest.skip(f"shared ball data not found in {folder} (set MHYOLO_SHARED or place ../shared beside the checkout)")
    return folder


def recipe(sources: list[dict], **top) -> object:
    return recipe_from_dict({"classes": CLASSES, "sources": sources, **top})


def build(rec, out: Path):
    return build_dataset(rec, out, progress=False)


def split_lists(out: Path) -> dict[str, list[str]]:
    return {s: sorted(p.name for p in (out / "images" / s).iterdir()) for s in ("train", "val")}


def test_basketball_classes_remapped_and_dropped(data_dir, tmp_path):
    src = data_dir / "basketball_f2rlv"
    rec = recipe([{"path": str(src), "name": "bb", "splits": ["test"], "classes": BASKET_MAP}])
    report = build(rec, tmp_path / "out")

    raw = {p: read_labels(p)[0] for p in sorted((src / "test" / "labels").glob("*.txt"))}
    ball_ids = {0, 1, 4}  # Basketball, Goal, rebound_hit
    with_ball = [p for p, b in raw.items() if ball_ids & set(b[:, 0].astype(int))]
    assert len(report.images) == len(with_ball)
    assert {i.cls for i in report.images} == {"basketball"}
    assert any(1 in set(raw[p][:, 0].astype(int)) for p in with_ball), "slice should contain Goal boxes"

    for img in report.images:
        original = raw[label_path_for(Path(img.origin))]
        expected = original[np.isin(original[:, 0].astype(int), list(ball_ids))]
        written, issues = read_labels(tmp_path / "out" / "labels" / img.split / Path(img.file).with_suffix(".txt").name,
                                      nc=3)
        assert not issues
        assert (written[:, 0] == 0).all()
        np.testing.assert_allclose(written[:, 1:], expected[:, 1:], atol=1e-6)
        assert (tmp_path / "out" / img.file).read_bytes() == Path(img.origin).read_bytes()

    all_ids = Counter(int(c) for b in raw.values() for c in b[:, 0])
    summary = report.sources["bb"]
    assert summary.dropped_boxes == {"Player": all_ids[2], "hoop": all_ids[3]}
    assert summary.kept_boxes == {n: all_ids[i] for i, n in ((0, "Basketball"), (1, "Goal"), (4, "rebound_hit"))}
    negatives = [d for d in report.drops if d.stage == "negatives"]
    assert len(negatives) == len(raw) - len(with_ball)
    assert any("only dropped classes (hoop)" in d.reason for d in negatives)
    assert summary.images_seen == len(report.images) + sum(summary.drops.values())

    spec = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert spec == {"path": ".", "train": "images/train", "val": "images/val", "nc": 3, "names": CLASSES}


def test_exact_counts_and_seeded_split(data_dir, tmp_path):
    sample = {"basketball": 8, "football": 6, "tennis-ball": 5}

    def make(seed: int):
        return recipe([{"path": str(data_dir / "seed_balls"), "classes": SEED_MAP, "sample": sample}],
                      seed=seed, val_fraction=0.2)

    first = build(make(7), tmp_path / "a")
    assert first.groups.groups == 0  # no near-duplicates inside seed_balls, so strata split exactly
    counts = first.counts()
    for name, n in sample.items():
        assert counts["train"][name]["images"] + counts["val"][name]["images"] == n
        assert counts["val"][name]["images"] == int(n * 0.2 + 0.5)
    names = split_lists(tmp_path / "a")
    assert all(n.startswith(("basketball_seed_balls_", "football_seed_balls_", "tennis-ball_seed_balls_"))
               for s in names.values() for n in s)

    again = build(make(7), tmp_path / "b")
    assert split_lists(tmp_path / "b") == names
    assert [(i.file, i.origin) for i in again.images] == [(i.file, i.origin) for i in first.images]

    other = build(make(8), tmp_path / "c")
    assert [(i.split, i.origin) for i in other.images] != [(i.split, i.origin) for i in first.images]


def test_cross_source_duplicates_dropped(data_dir, tmp_path):
    """All 70 seed_balls tennis images are in tennis_icifx; 7 of them in its valid split."""
    rec = recipe([
        {"path": str(data_dir / "seed_balls"), "name": "seed",
         "classes": {"basketball": None, "football": None, "tennis-ball": "tennis-ball"}},
        {"path": str(data_dir / "tennis_icifx"), "name": "icifx", "splits": ["val"],
         "classes": {"tennis-ball": "tennis-ball"}},
    ])
    report = build(rec, tmp_path / "out")
    assert len(report.duplicates) == 7
    assert {d.dropped_source for d in report.duplicates} == {"icifx"}
    assert {d.kept_source for d in report.duplicates} == {"seed"}
    dropped = {d.dropped for d in report.duplicates}
    origins = {i.origin for i in report.images}
    assert not dropped & origins
    seed_tennis = {str(p) for p in (data_dir / "seed_balls" / "images").glob("tennis_*.jpg")}
    assert seed_tennis <= origins
    assert len(report.images) == 70 + 70 - 7
    assert sum(d.stage == "duplicate" for d in report.drops) == 7


def test_video_stills_kept_on_one_side(data_dir, tmp_path):
    """basketball_f2rlv's own valid/test share near-duplicate stills; the build must not split them."""
    rec = recipe([{"path": str(data_dir / "basketball_f2rlv"), "name": "bb", "splits": ["val", "test"],
                   "classes": BASKET_MAP}], val_fraction=0.3)
    report = build(rec, tmp_path / "out")
    assert report.groups.cross_split > 0
    split_of_group: dict[int, set[str]] = defaultdict(set)
    for img in report.images:
        split_of_group[img.group].add(img.split)
    assert any(sum(1 for i in report.images if i.group == g) > 1 for g in split_of_group)
    assert all(len(s) == 1 for s in split_of_group.values())
    check = verify_dataset(tmp_path / "out" / "data.yaml", leak_threshold=rec.dedup.threshold, progress=False)
    assert check.ok and check.count("leak") == 0
    # the same images split without regard to groups would leak: the check itself can see it
    source_check = verify_dataset(data_dir / "basketball_f2rlv" / "data.yaml", progress=False)
    assert source_check.count("leak") > 0


def test_seed_recipe_reproduces_seed_000(data_dir, tmp_path):
    rec = load_recipe(repo_root() / "configs" / "seed.yaml")
    report = build(rec, tmp_path / "seed")
    counts = report.counts()
    assert sum(v["images"] for v in counts["train"].values()) == 168
    assert sum(v["images"] for v in counts["val"].values()) == 42
    for name in CLASSES:
        assert (counts["train"][name]["images"], counts["val"][name]["images"]) == (56, 14)
    seed_images = {str(p) for p in (data_dir / "seed_balls" / "images").iterdir()}
    assert {i.origin for i in report.images} == seed_images
    assert report.verify["ok"]
    assert (tmp_path / "seed" / "report.md").is_file() and (tmp_path / "seed" / "box_sizes.png").stat().st_size > 0


@pytest.mark.slow
def test_balls_recipe_balanced_and_deduplicated(data_dir, tmp_path):
    rec = load_recipe(repo_root() / "configs" / "balls.yaml")
    assert all(rec.source_path(s).is_dir() for s in rec.sources)
    report = build(rec, tmp_path / "balls")
    counts = report.counts()
    totals = [counts["train"][n]["images"] + counts["val"][n]["images"] for n in CLASSES]
    assert len(set(totals)) == 1 and totals[0] == report.per_class > 0
    assert len(report.duplicates) >= 70
    tennis_seed = {str(p) for p in (data_dir / "seed_balls" / "images").glob("tennis_*.jpg")}
    assert {d.kept for d in report.duplicates if d.dropped_source == "tennis"} <= tennis_seed
    groups: dict[int, set[str]] = defaultdict(set)
    for img in report.images:
        groups[img.group].add(img.split)
    assert all(len(s) == 1 for s in groups.values())
    assert report.verify["ok"]
    seen = sum(s.images_seen for s in report.sources.values())
    assert seen == len(report.images) + sum(1 for d in report.drops if d.stage != "orphan-label")
