"""Evaluate and filter for adaptation: a student that loses labelled val mAP50 beyond the allowed fall is not
the run's model; the given model is, written as a safetensors checkpoint even when it came as a `.pt`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_adapt import _settings, coco_labelled  # noqa: F401 - the fixture is used by name

from mhyolo.adapt.guard import decide
from mhyolo.errors import ConfigError


def _evaluation(before: float, after: float) -> dict:
    return {"before": {"map50": before}, "after": {"map50": after}}


def test_the_decision_follows_the_allowed_fall() -> None:
    assert decide(_evaluation(0.545, 0.527), 0.01).adapted is False  # the tennis fold's fall: refused
    assert decide(_evaluation(0.578, 0.608), 0.01).adapted is True  # the basketball fold's rise: kept
    assert decide(_evaluation(0.600, 0.591), 0.01).adapted is True  # within the allowed fall
    assert decide(_evaluation(0.600, 0.100), None).adapted is True  # no check asked for
    unchecked = decide(None, 0.01)
    assert unchecked.adapted and "no labelled val split" in unchecked.reason
    assert "0.545 to 0.527" in decide(_evaluation(0.545, 0.527), 0.01).reason
    with pytest.raises(ConfigError, match="--max-val-drop"):
        _settings(Path("."), "w.pt", "images", max_val_drop=-0.1)


def test_a_student_that_loses_labelled_val_leaves_the_given_model_in_place(
        tmp_path: Path, official_weights: Path, shared: Path, coco_labelled: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mhyolo.adapt.run import run_adapt
    from mhyolo.model.weights import load_model
    from mhyolo.pipeline import report

    real_score = report.score

    def student_scores_worse(weights, data, imgsz, *args, **kwargs):
        row = real_score(weights, data, imgsz, *args, **kwargs)
        return row if Path(weights).suffix == ".pt" else {**row, "map50": row["map50"] - 0.2}

    monkeypatch.setattr(report, "score", student_scores_worse)
    target = tmp_path / "target"
    target.mkdir()
    for image in sorted((shared / "data" / "tennis_icifx" / "test" / "images").glob("*.jpg"))[:4]:
        shutil.copy(image, target / image.name)
    result = run_adapt(_settings(tmp_path, official_weights, target, labelled=str(coco_labelled), imgsz=128,
                                 epochs=1, batch=4, workers=0, classes=[32], keep=0.3))
    summary = json.loads((tmp_path / "run" / "report.json").read_text())
    assert summary["decision"]["adapted"] is False and "fell from" in summary["decision"]["reason"]
    kept, given = load_model(result.model).state_dict(), load_model(official_weights).state_dict()
    assert kept.keys() == given.keys() and all(torch.equal(kept[k], given[k]) for k in given)  # the given model
    assert (tmp_path / "run" / "student" / "weights" / "best.safetensors").is_file()  # the student stays for a look
    assert "**the given model, not the adapted one**" in result.report.read_text()
