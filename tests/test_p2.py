"""The stride-4 detection level (`yolov5n-p2`, `yolov5n-p2-typehead-lite`): four levels measured
at strides 4-32, COCO's weights wherever rows and shapes match (rows 0-23 and Detect's P3-P5 rows,
found by the feature row they read), the P2 level at YOLOv5's bias prior, gradients through the P2
branch, and training, validation, the ONNX export and the per-level read with four levels.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_data import tiny_ball_dataset
from test_levels import _assert_same, _both

from mhyolo.errors import ConfigError
from mhyolo.model.weights import import_official
from mhyolo.model.yolo import YoloModel, load_model_config
from mhyolo.train.loss import DetectionLoss, level_balance
from mhyolo.train.state import build_training_model
from mhyolo.train.type_loss import ObjectTypeLoss

P2_MODELS = ["yolov5n-p2", "yolov5n-p2-typehead-lite"]
P2_TYPEHEAD = "yolov5n-p2-typehead-lite"
IMGSZ = 128
SPORTS_BALL = 32
COCO_TENSORS = 349
P2_LOADED, P2_TENSORS = 342, 395  # rows 0-23 of COCO (all but Detect's 7 tensors) of the typehead model's
DETECT_ROW, COCO_DETECT_ROW = 28, 24


def _coco_start(official_weights: Path, name: str = P2_TYPEHEAD) -> tuple[YoloModel, str]:
    torch.manual_seed(0)
    return build_training_model(str(official_weights), name, ["ball"], SPORTS_BALL)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", P2_MODELS)
def test_strides_are_measured_as_4_8_16_32(name: str) -> None:
    model = YoloModel(name, names=["ball"])
    assert model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    coco_anchors = torch.tensor(load_model_config("yolov5n")["anchors"], dtype=torch.float32).view(3, 3, 2)
    anchors = model.detect.anchors_px
    assert torch.equal(anchors[1:], coco_anchors)  # P3-P5 keep COCO's
    assert torch.equal(anchors[0], coco_anchors[0] / 2)  # P2: half of P3's


def test_output_shapes_per_level_at_128() -> None:
    model = YoloModel(P2_TYPEHEAD, names=["ball"]).eval()
    with torch.no_grad():
        raw = model(torch.zeros(2, 3, IMGSZ, IMGSZ))
        decoded = model.predict(torch.zeros(2, 3, IMGSZ, IMGSZ))
        wide = model(torch.zeros(1, 3, IMGSZ, 96))["detection"]
    sides = [32, 16, 8, 4]
    assert [tuple(r.shape) for r in raw["detection"]] == [(2, 3, s, s, 6) for s in sides]
    assert [tuple(r.shape) for r in raw["type"]] == [(2, 3, s, s, 3) for s in sides]
    rows = 3 * sum(s * s for s in sides)
    assert decoded["detection"].shape == (2, rows, 6) and decoded["type"].shape == (2, rows, 3)
    assert [tuple(r.shape[2:4]) for r in wide] == [(32, 24), (16, 12), (8, 6), (4, 3)]


# -------------------------------------------------------------------- weights
def test_coco_weights_load_where_rows_and_shapes_match(official_weights: Path) -> None:
    coco = import_official(official_weights).state_dict
    model, source = _coco_start(official_weights)
    own = model.state_dict()
    assert (len(coco), len(own)) == (COCO_TENSORS, P2_TENSORS)
    assert f"({P2_LOADED}/{P2_TENSORS} tensors" in source and "new detection level at stride 4" in source
    shared_rows = [k for k in coco if int(k.split(".")[1]) < COCO_DETECT_ROW]
    assert len(shared_rows) == P2_LOADED
    for key in shared_rows:  # the backbone (rows 0-9) and the P3-P5 neck (10-23) are COCO's
        assert torch.equal(own[key], coco[key]), key
    # Detect's P3-P5 convs come from COCO's Detect conv reading the same row (17, 20, 23):
    # box rows as they are, objectness plus the sports-ball logit (class_init: 32)
    for level in (1, 2, 3):
        for kind in ("weight", "bias"):
            ours = own[f"model.{DETECT_ROW}.m.{level}.{kind}"].view(3, 6, -1)
            theirs = coco[f"model.{COCO_DETECT_ROW}.m.{level - 1}.{kind}"].view(3, 85, -1)
            assert torch.equal(ours[:, :4], theirs[:, :4])
            assert torch.equal(ours[:, 4], theirs[:, 4] + theirs[:, 5 + SPORTS_BALL])


def test_the_p2_level_starts_from_the_bias_prior(official_weights: Path) -> None:
    model, _ = _coco_start(official_weights)
    conv = model.detect.m[0]
    bound = 1 / math.sqrt(conv.in_channels)  # nn.Conv2d's own bias initialisation lies within this
    bias = conv.bias.detach().view(3, 6)
    objectness = math.log(8 / (640 / 4) ** 2)  # YOLOv5's prior at stride 4 (P3's would be 1.39 higher)
    assert (bias[:, 4] - objectness).abs().max() <= bound
    assert (bias[:, 5] - math.log(0.6 / (1 - 0.99))).abs().max() <= bound


def test_p3_to_p5_start_exactly_as_the_three_level_model(official_weights: Path) -> None:
    """Same COCO rows, same features: the box and objectness logits of P3-P5 are those of
    yolov5n-typehead-lite built the same way (only the untrained class column differs)."""
    p2, _ = _coco_start(official_weights)
    three, _ = _coco_start(official_weights, "yolov5n-typehead-lite")
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = p2.eval()(x)["detection"], three.eval()(x)["detection"]
    assert len(ours) == 4 and len(theirs) == 3
    for a, b in zip(ours[1:], theirs):
        assert torch.equal(a[..., :5], b[..., :5])


# ----------------------------------------------------------------------- loss
def test_level_balance_follows_yolov5() -> None:
    assert level_balance(3) == (4.0, 1.0, 0.4)
    assert level_balance(4) == (4.0, 1.0, 0.25, 0.06)
    assert level_balance(5) == (4.0, 1.0, 0.25, 0.06, 0.02)
    with pytest.raises(ConfigError, match="at most 5 levels, this detector has 6"):
        level_balance(6)


def test_loss_is_finite_and_gradients_reach_the_p2_rows() -> None:
    torch.manual_seed(0)
    model = YoloModel(P2_TYPEHEAD, names=["ball"]).train()
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    # [image, type, cx, cy, w, h] normalised: a 6 px ball (P2's size) and an 80 px one (over 4x every P2 anchor)
    targets = torch.tensor([[0, 1, 0.30, 0.40, 6 / IMGSZ, 6 / IMGSZ], [1, 2, 0.5, 0.5, 80 / IMGSZ, 80 / IMGSZ]])
    raw = model(x)
    loss_fn = DetectionLoss(model.detect.anchors, model.detect.nc, imgsz=IMGSZ)
    assert loss_fn.balance == (4.0, 1.0, 0.25, 0.06)
    assigned = loss_fn.assign(raw["detection"], targets)
    assert len(assigned) == 4
    assert set(assigned[0].target.tolist()) == {0}  # only the tiny ball is matched on P2
    detection, parts = loss_fn(raw["detection"], targets, assigned)
    total = detection + ObjectTypeLoss()(raw["type"], assigned)
    assert torch.isfinite(total) and float(parts["box"]) > 0
    total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name in ("model.24.conv.weight", "model.27.cv3.conv.weight", f"model.{DETECT_ROW}.m.0.weight",
                 "model.29.m.0.0.weight", "model.2.cv1.conv.weight"):
        assert grads[name] is not None and float(grads[name].abs().sum()) > 0, name


# ------------------------------------------------ training, val, export, reading
@pytest.fixture(scope="module")
def trained(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One epoch of `mhyolo train` with the multi-head settings on a few seed_balls images at 128."""
    from mhyolo.cli import main

    folder = tmp_path_factory.mktemp("p2")
    data = tiny_ball_dataset(shared, folder / "data")
    run = folder / "run"
    assert main(["train", "--data", str(data), "--hyp", "multihead", "--model", P2_TYPEHEAD,
                 "--weights", str(shared / "weights" / "yolov5n.pt"), "--epochs", "1", "--imgsz", str(IMGSZ),
                 "--batch", "4", "--workers", "0", "--out", str(run), "--quiet"]) == 0
    return data, run


def _val_json(capsys: pytest.CaptureFixture[str], data: Path, weights: Path) -> dict:
    from mhyolo.cli import main

    assert main(["val", "--data", str(data), "--weights", str(weights), "--imgsz", str(IMGSZ), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_one_class_val_of_the_trained_p2_model(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from mhyolo.model.weights import read_metadata

    data, run = trained
    best = run / "weights" / "best.safetensors"
    assert f"({P2_LOADED}/{P2_TENSORS} tensors" in read_metadata(best)["weights_source"]
    scores = _val_json(capsys, data, best)
    with (run / "results.csv").open() as handle:
        row = list(csv.DictReader(handle))[-1]
    assert (scores["images"], scores["boxes"]) == (6, 6)
    # the loaded checkpoint scores what the training's own validation of it did
    assert scores["map50"] == pytest.approx(float(row["metrics/mAP50"]), rel=1e-4)
    assert "typed_map50" in scores and math.isfinite(scores["typed_map50"])


@pytest.fixture(scope="module")
def exported(trained: tuple[Path, Path]) -> Path:
    from mhyolo.cli import main

    pytest.importorskip("onnxruntime")
    _, run = trained
    target = run / "p2.onnx"
    assert main(["export", "--weights", str(run / "weights" / "best.safetensors"), "--out", str(target),
                 "--images", *map(str, sorted((run.parent / "data" / "images" / "val").iterdir()))]) == 0
    return target


def test_onnx_export_names_four_levels_and_matches_pytorch(trained: tuple[Path, Path], exported: Path) -> None:
    from mhyolo.deploy.check import check_backend, read_images
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mhyolo.model.weights import load_model

    backend = OnnxRuntimeBackend(exported, threads=1)
    meta = backend.metadata
    assert meta.levels == ["p2", "p3", "p4", "p5"] and meta.strides == [4.0, 8.0, 16.0, 32.0]
    assert meta.imgsz == IMGSZ
    assert backend.session.get_outputs()[0].name == "boxes_p2"
    assert [o.name for o in backend.session.get_outputs()] == meta.output_names
    assert len(meta.output_names) == 12
    images = read_images(sorted((trained[1].parent / "data" / "images" / "val").iterdir()))
    check = check_backend(load_model(trained[1] / "weights" / "best.safetensors"), backend, images, atol=1e-4)
    assert check.ok, check.problems
    shapes = {d.name: d.shape for d in check.diffs}
    assert shapes["boxes_p2"] == (6, 12, 32, 32) and shapes["types_p2"] == (6, 9, 32, 32)


def test_onnx_val_scores_what_pytorch_scores(trained: tuple[Path, Path], exported: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data, run = trained
    torch_scores = _val_json(capsys, data, run / "weights" / "best.safetensors")
    onnx_scores = _val_json(capsys, data, exported)
    assert onnx_scores["map50"] == pytest.approx(torch_scores["map50"], abs=1e-3)
    assert onnx_scores["typed_map50"] == pytest.approx(torch_scores["typed_map50"], abs=1e-3)


def test_per_level_read_keeps_what_the_full_decode_keeps_on_p2_rows(trained: tuple[Path, Path], exported: Path) -> None:
    """Rows of the P2 level, the first 3 x 32 x 32 of the prediction, come through the per-level
    read of the PyTorch model and of the ONNX graph exactly as through decoding every row."""
    from mhyolo.deploy.check import read_images
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mhyolo.infer.preprocess import letterbox, to_float_batch
    from mhyolo.model.weights import load_model

    data, run = trained
    images = read_images(sorted((data.parent / "images" / "val").iterdir()))
    x = torch.from_numpy(to_float_batch([letterbox(image, IMGSZ)[0] for image in images]))
    p2_rows = 3 * 32 * 32
    for backend in (load_model(run / "weights" / "best.safetensors").eval(), OnnxRuntimeBackend(exported, threads=1)):
        with torch.inference_mode():
            objectness = _p2_objectness(backend, x)
        conf = float(np.sort(objectness)[-20])  # a threshold that leaves some P2 rows
        kept, reference, _ = _both(backend, x, conf)
        _assert_same(kept, reference)
        rows = np.concatenate([k.det.indices for k in kept])
        assert bool((rows < p2_rows).any()), "no P2 row was kept"


def _p2_objectness(backend, x: torch.Tensor) -> np.ndarray:
    """Every P2 objectness of the batch, from the backend's own per-level read."""
    from mhyolo.infer.levels import level_reader

    levels = level_reader(backend)(x)
    return np.asarray(levels.scores[0][..., 0], dtype=np.float32).ravel()
