"""Leave-one-source-out folds and `mhyolo crossval` on slices of the real ball data.

The slices are chosen so that holding one source out has copies to remove: tennis_icifx's
valid split holds 7 images that are also in seed_balls (as tennis_0000...).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mhyolo.cli import main
from mhyolo.data.dedup import cross_pairs, image_hash
from mhyolo.data.folds import build_fold, scan_all
from mhyolo.data.hashing import decode_image
from mhyolo.data.pairing import list_images
from mhyolo.data.recipe import load_recipe
from mhyolo.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
SEED_MAP = {"basketball": "basketball", "football": "football", "tennis-ball": "tennis-ball"}


def _recipe(shared: Path, folder: Path) -> Path:
    recipe = {"classes": ["basketball", "football", "tennis-ball"], "seed": 0, "val_fraction": 0.25,
              "sources": [{"name": "seed", "path": str(shared / "data" / "seed_balls"), "classes": SEED_MAP,
                           "sample": {"basketball": 3, "football": 3, "tennis-ball": "all"}},
                          {"name": "tennis", "path": str(shared / "data" / "tennis_icifx"),
                           "classes": {"tennis-ball": "tennis-ball"}, "splits": ["val"]}]}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


FAST = {"epochs": 1, "batch": 8, "workers": 0, "close_mosaic": 0}


def _pipeline(folder: Path, **stages: dict) -> Path:
    """A pipeline file on the recipe of `_recipe` at 64 px with only `stages` training."""
    pipeline = {"recipe": "recipe.yaml", "imgsz": 64, "detector": {"enabled": False},
                "head": {"enabled": False}, "joint": {"enabled": False}, **stages}
    config = folder / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    return config


def _hashes(folder: Path) -> tuple[list[Path], np.ndarray]:
    images = list_images(folder)
    return images, np.stack([image_hash(decode_image(p)[0]) for p in images])


def _origins(folder: Path) -> set[str]:
    """Source files behind a split, by file content (names are rewritten by the build)."""
    return {p.read_bytes().hex()[:4096] for p in list_images(folder)}


@pytest.mark.parametrize("held_out", ["tennis", "seed"])
def test_fold_keeps_held_out_images_and_their_copies_out_of_training(shared: Path, tmp_path: Path,
                                                                     held_out: str) -> None:
    recipe = load_recipe(_recipe(shared, tmp_path))
    scans = scan_all(recipe, progress=False)
    out = tmp_path / "fold"
    report = build_fold(recipe, held_out, out, scans=scans, progress=False)

    held_source = next(s for s in scans if s.source == held_out)
    test_images = list_images(out / "images" / "test")
    assert len(test_images) == len(held_source.candidates)  # every usable held-out image is scored
    assert report.sources == [s.id for s in recipe.sources if s.id != held_out]
    # the slices hold 7 cross-source copies: holding either side out must remove the other side's
    assert len(report.held_out_copies) == 7
    assert all(c["source"] != held_out for c in report.held_out_copies)

    _, test_hashes = _hashes(out / "images" / "test")
    test_bytes = _origins(out / "images" / "test")
    for split in ("train", "val"):
        images, hashes = _hashes(out / "images" / split)
        assert images, split
        assert cross_pairs(hashes, test_hashes, recipe.dedup.threshold) == [], f"{split} holds a held-out copy"
        assert not (_origins(out / "images" / split) & test_bytes)
    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert spec["test"] == "images/test" and spec["train"] == "images/train"


def test_fold_refuses_an_unknown_source(shared: Path, tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(shared, tmp_path))
    with pytest.raises(ConfigError, match="no source named 'basket'"):
        build_fold(recipe, "basket", tmp_path / "fold", progress=False)


@pytest.mark.slow
def test_crossval_command_one_row_per_source_and_resumes(shared: Path, tmp_path: Path, official_weights: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _recipe(shared, tmp_path)
    config = _pipeline(tmp_path, multihead={"enabled": True, "hyp": "multihead", "overrides": FAST})
    out = tmp_path / "cv"
    assert main(["crossval", str(config), "--out", str(out), "--quiet", "--eval-imgsz", "96"]) == 0
    summary = json.loads((out / "crossval.json").read_text())
    assert set(summary["folds"]) == {"seed", "tennis"}
    for name, fold in summary["folds"].items():
        assert set(fold["scores"]) == {"64", "96"}
        row = fold["scores"]["64"]
        assert 0.0 <= row["map50"] <= 1.0 and 0.0 <= row["map50_95"] <= row["map50"]
        assert row["images"] == fold["counts"]["test"]["images"]
        assert list(row["size_bins"]) == ["tiny", "small", "medium", "large"]
        assert sum(b["boxes"] for b in row["size_bins"].values()) >= row["boxes"]  # every ball in a bin
    assert summary["folds"]["seed"]["scores"]["64"]["types_in_training"] == ["tennis-ball"]
    assert set(summary["mean"]) >= {"map50", "map50_95"}
    assert set(summary["size_bins_mean"]) == {"tiny", "small", "medium", "large"}
    markdown = (out / "crossval.md").read_text()
    assert "Per ball size at 64 px" in markdown and "Per ball size at 96 px" in markdown
    assert "| seed |" in markdown and "| tennis |" in markdown and "**mean**" in markdown
    assert (out / "crossval.png").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert '<h2 id="crossval">' in page and "<h3>Scored at 96 px</h3>" in page
    assert "seed/train" in page and "tennis/train" in page

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/train/weights/best.safetensors")}
    assert len(stamps) == 2
    capsys.readouterr()
    assert main(["crossval", str(config), "--out", str(out), "--quiet"]) == 0
    assert "training (" not in capsys.readouterr().out  # finished folds are not trained again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # a folder scored before the per-ball-size scores existed gains them when resumed, without training
    for path in out.glob("*/score.json"):
        stored = json.loads(path.read_text())
        for row in stored["scores"].values():
            del row["size_bins"]
        path.write_text(json.dumps(stored))
    assert main(["crossval", str(config), "--out", str(out), "--quiet"]) == 0
    assert "training (" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for path in out.glob("*/score.json"):
        assert all("size_bins" in row for row in json.loads(path.read_text())["scores"].values()), path
    assert "Per ball size at 96 px" in (out / "crossval.md").read_text()


def test_crossval_refuses_an_unknown_source_name(shared: Path, tmp_path: Path) -> None:
    _recipe(shared, tmp_path)
    assert main(["crossval", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "cv"),
                 "--sources", "nowhere"]) == 2


def test_type_accuracy_counts_only_types_seen_in_training() -> None:
    from mhyolo.eval.results import seen_type_scores

    names = ["basketball", "football", "tennis-ball"]
    matrix = [[5, 1, 0],   # basketball: 5 of 6 right
              [0, 0, 0],
              [2, 0, 0]]   # tennis balls, never seen in training: all called basketball
    seen = seen_type_scores({"type_names": names, "confusion_matrix": matrix, "typed_map50": 0.4},
                             ["basketball", "football"])
    assert seen["cls_accuracy"] == pytest.approx(5 / 6) and seen["typed_boxes"] == 6
    assert seen["typed_map50"] is None  # a held-out type was never seen: typed mAP says nothing
    every = seen_type_scores({"type_names": names, "confusion_matrix": matrix, "typed_map50": 0.4}, names)
    assert every["cls_accuracy"] == pytest.approx(5 / 8) and every["typed_map50"] == 0.4


def _fold_scores(values: dict[str, float]) -> dict:
    """A fold's `runs` whose held-out typed mAPs give these fitness values (0.1 mAP50 + 0.9 mAP50-95)."""
    return {"runs": {run: {"scores": {"64": {"map50": 0.5, "map50_95": 0.3, "typed_map50": v, "typed_map50_95": v}}}
                     for run, v in values.items()}}


def test_distillation_is_decided_on_the_held_out_means_over_folds() -> None:
    from mhyolo.pipeline.config import DistillConfig
    from mhyolo.pipeline.crossval_candidates import distill_on_held_out

    config = DistillConfig(enabled=True, seeds=[0, 1], variants={"kd": {}})
    folds = {"a": _fold_scores({"distill/teacher": 0.6, "distill/student-s0": 0.40, "distill/student-s1": 0.42,
                                "distill/kd-s0": 0.50, "distill/kd-s1": 0.52}),
             "b": _fold_scores({"distill/teacher": 0.2, "distill/student-s0": 0.20, "distill/student-s1": 0.20,
                                "distill/kd-s0": 0.20, "distill/kd-s1": 0.20})}
    summary = distill_on_held_out(folds, config, "64")
    student, kd = summary["candidates"]["student"], summary["candidates"]["kd"]
    assert student["fitness"]["values"] == pytest.approx([0.30, 0.31])  # per seed: mean over the two folds
    assert student["fitness"]["spread"] == pytest.approx(0.01)
    assert kd["fitness"]["mean"] == pytest.approx(0.355) and kd["per_fold"]["a"]["fitness"] == pytest.approx(0.51)
    assert summary["candidates"]["teacher"]["fitness"]["mean"] == pytest.approx(0.4)
    assert summary["candidates"]["teacher"]["fitness"]["spread"] is None  # one teacher per fold, no seeds
    assert summary["decision"]["chosen"] == "kd" and "+0.0500" in summary["decision"]["reason"]

    folds["b"]["runs"].pop("distill/kd-s1")  # a fold not finished: no decision yet, the rest still reported
    partial = distill_on_held_out(folds, config, "64")
    assert "decision" not in partial and partial["candidates"]["kd"]["runs"] == ["distill/kd-s0"]


@pytest.mark.slow
def test_crossval_of_a_distillation_trains_a_teacher_per_fold(shared: Path, tmp_path: Path, official_weights: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _recipe(shared, tmp_path)
    config = _pipeline(tmp_path, distill={"enabled": True, "teacher": {"hyp": "multihead", "overrides": FAST},
                                          "student": {"hyp": "multihead", "overrides": FAST},
                                          "variants": {"kd": {"response_kd": {"weight": 0.1}}}, "seeds": [0]})
    out = tmp_path / "cv"
    assert main(["crossval", str(config), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "crossval.json").read_text())
    for name, fold in summary["folds"].items():
        assert set(fold["runs"]) == {"distill/teacher", "distill/student-s0", "distill/kd-s0"}
        assert fold["scores"] == fold["runs"]["distill/student-s0"]["scores"]  # the main table: the student
        teacher = Path(fold["runs"]["distill/teacher"]["weights"])
        assert teacher == out / name / "distill" / "teacher" / "weights" / "best.safetensors"
        kd = json.loads((out / name / "distill" / "kd-s0" / "done.json").read_text())["config"]
        assert kd["teacher"] == str(teacher)  # the fold's own teacher, never one that saw the held-out source
    assert set(summary["distill"]["candidates"]) == {"teacher", "student", "kd"}
    assert summary["distill"]["decision"]["chosen"] in ("student", "kd")
    assert "Distillation on the held-out sources" in (out / "crossval.md").read_text()
    assert "Distillation on the held-out sources" in (out / "report.html").read_text()

    capsys.readouterr()
    assert main(["crossval", str(config), "--out", str(out), "--quiet"]) == 0
    assert "training (" not in capsys.readouterr().out  # every run of every fold resumes as done


def test_crossval_of_a_distillation_refuses_a_given_teacher_and_epochs(shared: Path, tmp_path: Path) -> None:
    from mhyolo.pipeline.crossval import CrossvalSettings, plan

    _recipe(shared, tmp_path)
    config = _pipeline(tmp_path, distill={"enabled": True, "teacher_weights": "teacher.safetensors"})
    with pytest.raises(ConfigError, match="teacher per fold"):
        plan(CrossvalSettings(config=config, out=tmp_path / "cv"))
    config = _pipeline(tmp_path, distill={"enabled": True})
    with pytest.raises(ConfigError, match="--epochs"):
        plan(CrossvalSettings(config=config, out=tmp_path / "cv", epochs=3))
    assert len(plan(CrossvalSettings(config=config, out=tmp_path / "cv"))[2][0].runs) == 1 + 3  # teacher, 3 runs
