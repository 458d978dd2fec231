"""The pipeline with masks (configs/pipeline/segment.yaml's chain on a tiny recipe): the mask model
trains, every exported and INT8 format is scored with box and mask mAP, and the report says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mhyolo.cli import main
from mhyolo.model.weights import load_checkpoint

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = {"epochs": 1, "batch": 4, "workers": 0, "close_mosaic": 0}


def test_the_segment_pipeline_scores_masks_in_every_format(shared: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    shipped = yaml.safe_load((CONFIGS / "pipeline" / "segment.yaml").read_text())
    assert shipped["multihead"]["hyp"] == "segment"
    recipe = {"classes": ["basketball", "football", "tennis-ball"], "seed": 0, "val_fraction": 0.25,
              "sources": [{"name": "seed", "path": str(shared / "data" / "seed_balls"),
                           "classes": {"basketball": "basketball", "football": "football",
                                       "tennis-ball": "tennis-ball"}, "sample": 4}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    pipeline = {**shipped, "recipe": "recipe.yaml", "imgsz": 128, "latency_runs": 2,
                "multihead": {"hyp": "segment", "overrides": FAST},
                "benchmark": {"formats": ["torch", "onnx", "onnx-int8", "openvino-int8"], "runs": 2, "calib_images": 4}}
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    model = load_checkpoint(run / "model.safetensors")
    assert set(model.model.heads) == {"detection", "type", "masks"}
    bench = json.loads((run / "benchmark" / "benchmark.json").read_text())
    rows = {row["id"]: row for row in bench["rows"] if "/" not in row["id"]}
    assert {"torch", "onnx", "onnx-int8", "openvino-int8"} <= set(rows)
    for name, row in rows.items():
        assert 0.0 <= row["mask_map50"] <= 1.0, name
    assert rows["onnx"]["mask_map50"] == pytest.approx(rows["torch"]["mask_map50"], abs=0.02)
    assert "| mask mAP50 | Δ | mask mAP50-95 |" in (run / "benchmark" / "benchmark.md").read_text()
    page = " ".join(re.sub(r"<[^>]+>", " ", (run / "report.html").read_text()).split())
    assert "typed mAP50 mask mAP50 mask mAP50-95" in page  # the page's benchmark table has the mask columns
