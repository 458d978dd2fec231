"""Multi-scale (and flip) inference with real models: COCO YOLOv5n's ball rows at two scales with flip,
scoring at one scale against plain validation and under every rule, the benchmark's multi-scale table, and
the Python API (the merge rules themselves on synthetic images: `test_multiscale.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mhyolo.cli import main
from mhyolo.errors import ConfigError
from mhyolo.infer.multiscale import MultiScalePredictor, ScaleSettings
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.scale_merge import MERGE_RULES


def test_a_real_model_at_two_scales_with_flip(official_weights: Path, shared: Path) -> None:
    from helpers.models import sports_ball_model

    model = sports_ball_model(official_weights, "yolov5n-typehead-lite")
    photos = sorted((shared / "data" / "seed_balls" / "images").iterdir())[:3]
    images = [cv2.imread(str(p)) for p in photos]
    predictor = Predictor(model, imgsz=320, conf=0.1, rect=True)
    alone = predictor.predict(images)
    single = MultiScalePredictor(predictor, ScaleSettings(sizes=(320,))).predict(images)
    assert [json.dumps(p.to_json("i")) for p in single] == [json.dumps(p.to_json("i")) for p in alone]
    for merge in MERGE_RULES:
        merged = MultiScalePredictor(predictor, ScaleSettings(sizes=(1, 2), flip=True, merge=merge)
                                     ).predict(images)
        for prediction, image in zip(merged, images):
            height, width = image.shape[:2]
            assert prediction.has_types and len(prediction.type_ids) == len(prediction)
            assert (prediction.boxes >= 0).all() and (prediction.boxes[:, [0, 2]] <= width).all()
            assert (prediction.boxes[:, [1, 3]] <= height).all()
            assert (np.diff(prediction.scores) <= 0).all()  # best first


@pytest.fixture(scope="module")
def ball_model(official_weights: Path, shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A typed ball model (COCO's sports ball with a seeded type head) saved for 320 px, and a tiny real set."""
    from helpers.models import sports_ball_model
    from helpers.tiny_data import tiny_ball_dataset

    from mhyolo.model.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("multiscale")
    data = tiny_ball_dataset(shared, folder / "data", per_type_train=1, per_type_val=2)
    weights = save_checkpoint(folder / "model.safetensors",
                              sports_ball_model(official_weights, "yolov5n-typehead-lite"),
                              {"train_config": {"imgsz": 320}})
    return weights, data


def test_scoring_at_one_scale_matches_plain_validation_and_every_rule_scores(ball_model) -> None:
    import mhyolo
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import score_split
    from mhyolo.runtime.load import load_backend

    weights, data = ball_model
    backend, spec = load_backend(weights), load_data_spec(data)
    with torch.no_grad():
        plain = score_split(backend, spec, 320, progress=False)
        single = score_split(backend, spec, 320, progress=False, scales=ScaleSettings(sizes=(1,)))
    keys = ("map50", "map50_95", "precision", "recall", "cls_accuracy", "typed_map50", "typed_map50_95")
    assert [single.summary()[k] for k in keys] == pytest.approx([plain.summary()[k] for k in keys], abs=1e-6)
    model = mhyolo.load(weights)
    for merge in MERGE_RULES:
        summary = model.val(data, scales=[1, 2], flip=True, merge=merge)
        assert 0.0 < summary["map50"] <= 1.0 and summary["images"] == plain.metrics.images
        assert "cls_accuracy" in summary  # types reach the type evaluator through the merge
    with pytest.raises(ConfigError, match="flip needs scales"):
        model.val(data, flip=True)


def test_the_benchmark_times_every_rule_beside_single_scale(official_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")
    from mhyolo.bench.report import multiscale_table

    out = tmp_path / "out"
    code = main(["benchmark", "--weights", str(official_weights), "--no-accuracy", "--imgsz", "160", "--out", str(out),
                 "--formats", "torch", "onnx", "--runs", "2", "--warmup", "1", "--threads", "1", "--calib-images", "2",
                 "--no-detector", "--quiet", "--scales", "1", "2", "--flip"])
    assert code == 0
    report = json.loads((out / "benchmark.json").read_text())
    scaled = report["settings"]["multiscale"]
    assert scaled["rules"] == list(MERGE_RULES) and scaled["flip"] is True
    for row_id in ("torch", "onnx"):  # ONNX Runtime's fixed 160 px graph runs 320 as tiles
        entry = scaled["rows"][row_id]
        assert entry["sizes"] == [160, 320] and entry["note"] is None
        assert set(entry["ms"]) == set(MERGE_RULES) and min(entry["ms"].values()) > 0
    text = (out / "benchmark.md").read_text()
    assert "Multi-scale: --scales 1 2 (160, 320 px) + flip" in text
    assert "| format | single scale: end-to-end ms | nms: ms (boxes) | wbf: ms (boxes) | size: ms (boxes) | note |" \
        in text
    # without --scales nothing of it is written
    assert multiscale_table([], {k: v for k, v in report["settings"].items() if k != "multiscale"}) == []


def test_the_api_predicts_at_several_scales(ball_model, shared: Path) -> None:
    import mhyolo

    weights, _ = ball_model
    model = mhyolo.load(weights)
    photo = sorted((shared / "data" / "seed_balls" / "images").iterdir())[0]
    plain = model.predict(photo, conf=0.1)[0]
    single = model.predict(photo, conf=0.1, scales=[320])[0]
    assert json.dumps(single.to_json()) == json.dumps(plain.to_json())
    for merge in MERGE_RULES:
        (result,) = model.predict(photo, conf=0.1, scales=[1, 2], flip=True, merge=merge, size_band=(8, 200),
                                  scale_weights=[0.8, 1.0])
        assert result.types is not None and len(result.types) == len(result)
    with pytest.raises(ConfigError, match="--scales 'abc'"):
        model.predict(photo, scales=["abc"])
    with pytest.raises(ConfigError, match="do not combine"):
        model.predict(photo, scales=[1, 2], slice_size=256)
