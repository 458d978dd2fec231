"""`mhyolo pipeline` end to end on a tiny recipe: every stage runs once, a re-run skips them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mhyolo.cli import main
from mhyolo.model.weights import load_checkpoint

CONFIGS = Path(__file__).parents[1] / "configs"


def _tiny_pipeline(shared: Path, folder: Path) -> Path:
    recipe = {"classes": ["basketball", "football", "tennis-ball"], "seed": 0, "val_fraction": 0.25,
              "sources": [{"name": "seed", "path": str(shared / "data" / "seed_balls"),
                           "classes": {"basketball": "basketball", "football": "football",
                                       "tennis-ball": "tennis-ball"},
                           "sample": 4}]}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fast = {"epochs": 1, "batch": 4, "workers": 0, "close_mosaic": 0}
    pipeline = {"recipe": "recipe.yaml", "imgsz": 128, "latency_runs": 2,
                "detector": {"hyp": str(CONFIGS / "hyp.yaml"), "overrides": fast},
                "head": {"hyp": str(CONFIGS / "head.yaml"), "overrides": fast},
                "joint": {"hyp": str(CONFIGS / "joint.yaml"), "overrides": fast},
                "image_head": {"enabled": True, "hyp": str(CONFIGS / "head.yaml"),
                               "overrides": {**fast, "model": str(CONFIGS / "models" / "yolov5n-imagehead.yaml")}},
                "baseline": {"enabled": True, "hyp": str(CONFIGS / "hyp.yaml"), "overrides": fast},
                "benchmark": {"formats": ["torch", "onnx", "onnx-int8"], "runs": 2, "calib_images": 4}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def test_pipeline_runs_every_stage_then_skips_them(shared: Path, tmp_path: Path, official_weights: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = _tiny_pipeline(shared, tmp_path)
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    for stage in ("data", "detector", "image_head", "head", "joint", "baseline"):
        assert (run / stage / "done.json").is_file(), stage
    model = load_checkpoint(run / "model.safetensors")
    assert set(model.model.heads) == {"detection", "type"}
    report = json.loads((run / "report.json").read_text())
    rows = report["models"]
    assert set(rows) == {"detector", "image_head", "head", "joint", "baseline"}
    for name in ("image_head", "head", "joint", "baseline"):
        assert rows[name]["cls_accuracy"] is None or 0 <= rows[name]["cls_accuracy"] <= 1
        assert "typed_map50" in rows[name]
    assert "cls_accuracy" not in rows["detector"]  # a one-class detector says nothing about types
    assert report["head_overhead"] > 0.5 and report["image_head_overhead"] > 0.5
    image_head = load_checkpoint(run / "image_head" / "weights" / "best.safetensors")
    assert set(image_head.model.heads) == {"detection", "image_type"}
    text = (run / "report.md").read_text()
    assert "| head |" in text and "Every format" in text and "ONNX Runtime INT8" in text
    assert (run / "benchmark" / "done.json").is_file() and (run / "benchmark" / "model.onnx").is_file()
    stamp = (run / "head" / "weights" / "best.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    assert (run / "head" / "weights" / "best.safetensors").stat().st_mtime_ns == stamp  # not redone
    assert "== head" not in capsys.readouterr().out
