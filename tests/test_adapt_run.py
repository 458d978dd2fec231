"""`mhyolo adapt` end to end: one tiny run with the COCO model (model, report, re-run, refused settings), and
two rounds on a video."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
import torch
from test_adapt import _settings, _video, coco_labelled  # noqa: F401 - the fixture is used by name

from mhyolo.data.verify import verify_dataset
from mhyolo.errors import MhyoloError


# ------------------------------------------------------------------------------- (e) one tiny run
def test_a_tiny_adaptation_of_the_coco_model_writes_the_model_and_the_report(
        tmp_path: Path, official_weights: Path, shared: Path, coco_labelled: Path) -> None:
    from mhyolo.adapt.run import run_adapt
    from mhyolo.model.weights import load_model

    target = tmp_path / "target"
    target.mkdir()
    for image in sorted((shared / "data" / "tennis_icifx" / "test" / "images").glob("*.jpg"))[:4]:
        shutil.copy(image, target / image.name)  # 416 px: the auto teacher slices them at 128
    settings = _settings(tmp_path, official_weights, target, labelled=str(coco_labelled), imgsz=128, epochs=1,
                         batch=4, workers=0, classes=[32], keep=0.3, max_val_drop=None)  # the guard: test_adapt_guard
    result = run_adapt(settings)
    run = tmp_path / "run"
    model = load_model(result.model)
    assert model.names == load_model(official_weights).names  # fine-tuned as it was: same classes
    assert not torch.equal(model.state_dict()["model.24.m.0.weight"],
                           load_model(official_weights).state_dict()["model.24.m.0.weight"])
    text = result.report.read_text()
    assert "## Before and after" in text and "| before |" in text and "| after |" in text
    for picture in (run / "before_after.png", result.sheet):
        assert cv2.imread(str(picture)) is not None
    summary = json.loads((run / "report.json").read_text())
    assert summary["rounds"][0]["threshold"]["how"] == "given"
    assert summary["rounds"][0]["pseudo"]["images"] == 4
    assert verify_dataset(result.pseudo / "data.yaml", progress=False, workers=1).ok
    predictions = [json.loads(line) for line in (run / "teacher" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(min(p["scores"], default=1) >= 0.1 for p in predictions)

    # a re-run skips every pass; other settings into the same folder are refused
    best = run / "student" / "weights" / "best.safetensors"
    stamp = best.stat().st_mtime_ns
    run_adapt(settings)
    assert best.stat().st_mtime_ns == stamp
    with pytest.raises(MhyoloError, match="other settings"):
        run_adapt(_settings(tmp_path, official_weights, target, labelled=str(coco_labelled), imgsz=128, epochs=2,
                            batch=4, workers=0, classes=[32], keep=0.3, max_val_drop=None))


def test_two_rounds_on_a_video_make_the_first_student_the_second_teacher(tmp_path: Path,
                                                                          official_weights: Path) -> None:
    from mhyolo.adapt.run import run_adapt

    video = _video(tmp_path / "clip.mp4", frames=12)
    result = run_adapt(_settings(tmp_path, official_weights, video, imgsz=64, epochs=1, batch=2, workers=0,
                                 keep=0.3, rounds=2, fps=5.0))
    run = tmp_path / "run"
    frames = sorted((run / "frames").glob("*.jpg"))
    assert len(frames) == 6  # 12 frames at 10/s sampled at 5/s
    duplicates = json.loads((run / "targets.json").read_text())
    left_out = len(duplicates["of_target"]) + len(duplicates["of_labelled"])
    assert len(list((run / "pseudo" / "images").iterdir())) == 6 - left_out >= 1
    first = run / "round1" / "student" / "weights" / "best.safetensors"
    summary = json.loads((run / "report.json").read_text())
    assert [r["teacher"] for r in summary["rounds"]] == [str(official_weights.resolve()), str(first)]
    assert (run / "round1" / "pseudo" / "data.yaml").is_file() and (run / "round1" / "contact_sheet.png").is_file()
    assert result.model.read_bytes() == (run / "student" / "weights" / "best.safetensors").read_bytes()
    assert summary["video"] and summary["evaluation"] is None
