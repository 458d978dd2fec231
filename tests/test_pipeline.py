"""`mhyolo pipeline` end to end on a tiny recipe: every stage runs once, a re-run skips them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mhyolo.cli import main
from mhyolo.model.weights import load_checkpoint

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = {"epochs": 1, "batch": 4, "workers": 0, "close_mosaic": 0}  # every stage: one short epoch


def _tiny_recipe(shared: Path, folder: Path) -> None:
    """`folder/recipe.yaml`: four seed_balls images of each type."""
    recipe = {"classes": ["basketball", "football", "tennis-ball"], "seed": 0, "val_fraction": 0.25,
              "sources": [{"name": "seed", "path": str(shared / "data" / "seed_balls"),
                           "classes": {"basketball": "basketball", "football": "football",
                                       "tennis-ball": "tennis-ball"},
                           "sample": 4}]}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def _tiny_pipeline(shared: Path, folder: Path) -> Path:
    _tiny_recipe(shared, folder)
    pipeline = {"recipe": "recipe.yaml", "imgsz": 128, "latency_runs": 2,
                "detector": {"hyp": "hyp", "overrides": FAST},
                "head": {"hyp": "head", "overrides": FAST},
                "joint": {"hyp": "joint", "overrides": FAST},
                "multihead": {"enabled": True, "hyp": "multihead", "overrides": FAST},
                "image_head": {"enabled": True, "hyp": "head",
                               "overrides": {**FAST, "model": "yolov5n-imagehead"}},
                "baseline": {"enabled": True, "hyp": "hyp", "overrides": FAST},
                "benchmark": {"formats": ["torch", "onnx", "onnx-int8"], "runs": 2, "calib_images": 4}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def test_pipeline_runs_every_stage_then_skips_them(shared: Path, tmp_path: Path, official_weights: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = _tiny_pipeline(shared, tmp_path)
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    for stage in ("data", "detector", "image_head", "head", "joint", "multihead", "baseline"):
        assert (run / stage / "done.json").is_file(), stage
    model = load_checkpoint(run / "model.safetensors")
    assert set(model.model.heads) == {"detection", "type"}
    # the last enabled of detector -> head -> joint -> multihead is the final model
    multihead = (run / "multihead" / "weights" / "best.safetensors").read_bytes()
    assert (run / "model.safetensors").read_bytes() == multihead
    report = json.loads((run / "report.json").read_text())
    assert report["final_stage"] == "multihead"
    rows = report["models"]
    assert set(rows) == {"detector", "image_head", "head", "joint", "multihead", "baseline"}
    for name in ("image_head", "head", "joint", "multihead", "baseline"):
        assert rows[name]["cls_accuracy"] is None or 0 <= rows[name]["cls_accuracy"] <= 1
        assert "typed_map50" in rows[name]
    assert "cls_accuracy" not in rows["detector"]  # a one-class detector says nothing about types
    # latency ratios are measured, not judged here (speed lives in the benchmarks): present and finite
    for name in ("head_overhead", "image_head_overhead"):
        assert math.isfinite(report[name]) and report[name] > 0, name
    image_head = load_checkpoint(run / "image_head" / "weights" / "best.safetensors")
    assert set(image_head.model.heads) == {"detection", "image_type"}
    text = (run / "report.md").read_text()
    assert "| head |" in text and "Every format" in text and "ONNX Runtime INT8" in text
    assert (run / "benchmark" / "done.json").is_file() and (run / "benchmark" / "model.onnx").is_file()
    # the benchmark times the final model beside its own detector part (type head dropped)
    bench = json.loads((run / "benchmark" / "benchmark.json").read_text())
    assert {"detector/torch", "detector/onnx"} <= {row["id"] for row in bench["rows"]}
    by_id = {row["id"]: row for row in bench["rows"]}
    assert by_id["detector/torch"]["map50"] == pytest.approx(by_id["torch"]["map50"], abs=1e-9)
    # the page a person opens: every stage, every format, every plot of the run inlined
    page = (run / "report.html").read_text()
    assert [h for h in ("stages", "benchmark", "data", "training") if f'<h2 id="{h}">' in page] == \
        ["stages", "benchmark", "data", "training"]
    for name in rows:
        assert f'<th scope="row">{name}' in page, name
    for row in bench["rows"]:
        assert row["title"] in page, row["title"]
    assert page.count("<img src=\"data:image/") == len(list(run.glob("*/*.png"))) > len(rows)
    assert "http://" not in page and "https://" not in page
    stamp = (run / "head" / "weights" / "best.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    assert (run / "head" / "weights" / "best.safetensors").stat().st_mtime_ns == stamp  # not redone
    assert "== head" not in capsys.readouterr().out


def _write(folder: Path, config: dict) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"recipe": "recipe.yaml", **config}))
    return path


@pytest.mark.parametrize(("config", "message"), [
    ({"detector": {"enabled": False}}, "train on the detector stage's model"),
    ({"final": "baseline"}, "not a stage that makes the final model"),
    ({"final": "multihead"}, "does not run"),
    ({"final": "joint", "head": {"enabled": False}}, "does not run"),
])
def test_pipeline_config_refuses_stages_that_cannot_run(tmp_path: Path, config: dict, message: str) -> None:
    from mhyolo.errors import ConfigError
    from mhyolo.pipeline.config import load_pipeline_config

    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(_write(tmp_path, config))


def test_final_stage_is_the_last_enabled_one(tmp_path: Path) -> None:
    from mhyolo.pipeline.config import final_stage, load_pipeline_config

    assert final_stage(load_pipeline_config(_write(tmp_path, {}))) == "joint"
    assert final_stage(load_pipeline_config(_write(tmp_path, {"multihead": {"enabled": True}}))) == "multihead"
    only = {"detector": {"enabled": False}, "head": {"enabled": False}, "joint": {"enabled": False},
            "multihead": {"enabled": True}}
    assert final_stage(load_pipeline_config(_write(tmp_path, only))) == "multihead"
    staged = {"multihead": {"enabled": True}, "final": "joint"}
    assert final_stage(load_pipeline_config(_write(tmp_path, staged))) == "joint"
    assert final_stage(load_pipeline_config(CONFIGS / "pipeline" / "demo.yaml")) == "multihead"


def test_two_stage_stage_scores_detector_and_classifier_beside_the_multihead_model(
        shared: Path, tmp_path: Path, official_weights: Path) -> None:
    _tiny_recipe(shared, tmp_path)
    config = _write(tmp_path, {"imgsz": 128, "latency_runs": 1, "detector": {"enabled": False},
                               "head": {"enabled": False}, "joint": {"enabled": False},
                               "multihead": {"enabled": True, "hyp": "multihead", "overrides": FAST},
                               "two_stage": {"enabled": True, "overrides": {"epochs": 1, "imgsz": 64, "batch": 8}},
                               "benchmark": {"enabled": False}})
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    report = json.loads((run / "report.json").read_text())
    row = report["models"]["two_stage"]
    assert row["detector"] == str(run / "two_stage" / "detector.safetensors")
    assert row["classifier"] == str(run / "two_stage" / "classifier" / "weights" / "best.safetensors")
    assert Path(row["detector"]).is_file() and Path(row["classifier"]).is_file()
    # the final model's own detector part: the same boxes, so the same class-agnostic mAP; only typing differs
    assert row["map50"] == pytest.approx(report["models"]["multihead"]["map50"], abs=1e-9)
    assert "cls_accuracy" in row and "typed_map50" in row
    detector = load_checkpoint(row["detector"])
    assert set(detector.model.heads) == {"detection"}
    assert "| two_stage |" in (run / "report.md").read_text()
    assert '<th scope="row">two_stage' in (run / "report.html").read_text()


def test_staged_pipeline_hands_each_stage_the_previous_stages_best(shared: Path, tmp_path: Path,
                                                                    official_weights: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """detector -> head (detector frozen) -> joint, two epochs each, with every stage's validation made to
    score 0.5 then 0.4: `best` is each stage's first epoch and differs from its `last`, so starting from
    `last` instead of `best` shows."""
    import itertools
    from helpers.fake_validation import validation_scoring

    import torch

    import mhyolo.train.trainer as trainer_module

    scores = itertools.cycle([0.5, 0.4])

    def falling_validation(*args, **kwargs):
        return validation_scoring(next(scores))

    starts: list[tuple[str | None, dict[str, torch.Tensor]]] = []
    build = trainer_module.build_training_model

    def recording_build(weights, *args, **kwargs):
        model, source = build(weights, *args, **kwargs)
        starts.append((weights, {k: v.clone() for k, v in model.state_dict().items()}))
        return model, source

    monkeypatch.setattr(trainer_module, "validate", falling_validation)
    monkeypatch.setattr(trainer_module, "build_training_model", recording_build)
    _tiny_recipe(shared, tmp_path)
    two = {**FAST, "epochs": 2}
    config = _write(tmp_path, {"imgsz": 64, "latency_runs": 1, "detector": {"hyp": "hyp", "overrides": two},
                               "head": {"hyp": "head", "overrides": two}, "joint": {"hyp": "joint", "overrides": two},
                               "benchmark": {"enabled": False}})
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--out", str(run), "--quiet"]) == 0

    def weights(stage: str, name: str = "best") -> dict[str, torch.Tensor]:
        checkpoint = load_checkpoint(run / stage / "weights" / f"{name}.safetensors")
        assert checkpoint.metadata["epoch"] == (0 if name == "best" else 1), (stage, name)
        return checkpoint.model.state_dict()

    detector, detector_last, head = weights("detector"), weights("detector", "last"), weights("head")
    assert any(not torch.equal(detector[k], detector_last[k]) for k in detector)  # best and last tell apart
    assert [w for w, _ in starts] == ["yolov5n.pt",  # the detector stage: the COCO weights (hyp.yaml)
                                      str(run / "detector" / "weights" / "best.safetensors"),
                                      str(run / "head" / "weights" / "best.safetensors")]
    # the head stage starts from the detector's best, and its best keeps every detector row bit for bit
    head_start, joint_start = starts[1][1], starts[2][1]
    assert set(detector) < set(head) == set(head_start)  # the type head's rows are the only new ones
    for key, value in detector.items():
        assert torch.equal(head_start[key], value), key
        assert torch.equal(head[key], value), key
    assert any(not torch.equal(head[k], head_start[k]) for k in set(head) - set(detector))  # the type head trained
    # joint starts from the head's best, all of it
    assert set(joint_start) == set(head)
    for key, value in head.items():
        assert torch.equal(joint_start[key], value), key
    # and the final model is the joint stage's best, byte for byte
    assert json.loads((run / "report.json").read_text())["final_stage"] == "joint"
    assert (run / "model.safetensors").read_bytes() == (run / "joint" / "weights" / "best.safetensors").read_bytes()
