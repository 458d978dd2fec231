"""The mask model through the training pipeline: `--hyp segment` trains boxes, types and masks
together, the mask loss is logged, and `val` of the result reports mask mAP."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from helpers.tiny_data import tiny_ball_dataset
from mhyolo.cli import main


def test_segment_hyp_trains_masks_and_val_scores_them(shared: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_ball_dataset(shared, tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hyp", "segment", "--epochs", "2", "--imgsz", "128", "--batch", "4",
                 "--workers", "0", "--out", str(run), "--quiet"]) == 0
    with open(run / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    masks = [float(row["train/mask"]) for row in rows]
    assert len(masks) == 2 and all(math.isfinite(v) and v > 0 for v in masks)
    capsys.readouterr()
    assert main(["val", "--weights", str(run / "weights" / "last.safetensors"), "--data", str(data), "--imgsz", "128",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= row["mask_map50_95"] <= row["mask_map50"] <= 1.0
