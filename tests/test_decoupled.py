"""The decoupled detection head (YOLOX style, YOLOv5 anchors): Detect's raw layout cell by
cell and anchor by anchor, YAML rows and their errors, COCO weights in rows 0-23, class_init
refused, ONNX export checked in ONNX Runtime, and one epoch of `mhyolo train`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.registry import assert_layers_registered_after
from helpers.tiny_data import tiny_ball_dataset
from mhyolo.errors import ConfigError
from mhyolo.model.decoupled import DecoupledDetect
from mhyolo.model.heads import Detect
from mhyolo.model.type_heads import ObjectTypeHead
from mhyolo.model.weights import import_official, load_checkpoint
from mhyolo.model.yolo import YoloModel, builtin_configs, load_model_config
from mhyolo.train.loss import DetectionLoss
from mhyolo.train.state import build_training_model, transfer_weights

CHANNELS = (64, 128, 256)  # yolov5n's P3, P4, P5 widths
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
CONFIGS = ("yolov5n-decoupled", "yolov5n-decoupled-typehead-lite")
HEAD_ROW = 24


def features(batch: int = 2, sizes: tuple[int, ...] = (8, 4, 2)) -> list[torch.Tensor]:
    return [torch.randn(batch, c, s, s) for c, s in zip(CHANNELS, sizes)]


def head_parameters(head: DecoupledDetect, part: str) -> list[torch.nn.Parameter]:
    return [p for level in head.m for p in getattr(level, part).parameters()]


# ------------------------------------------------------------------------- layout
@pytest.mark.parametrize("nc", [1, 3])
def test_every_output_lands_where_detect_puts_it(nc: int) -> None:
    """Channel a*k + j of each prediction conv must be value j of anchor a, and the values
    must sit at [x, y, w, h, obj, cls...] like Detect's."""
    torch.manual_seed(0)
    head = DecoupledDetect(nc, ANCHORS, CHANNELS, hidden=16).eval()
    raw = head(features())
    assert [tuple(r.shape) for r in raw] == [(2, 3, s, s, 5 + nc) for s in (8, 4, 2)]
    marks = {("reg_pred", 1 * 4 + 2): (1, 2), ("obj_pred", 2): (2, 4), ("cls_pred", 0 * nc + nc - 1): (0, 4 + nc)}
    with torch.no_grad():
        for level in head.m:
            for conv in (level.reg_pred, level.obj_pred, level.cls_pred):
                conv.weight.zero_()
                conv.bias.zero_()
            for (name, channel), _ in marks.items():
                getattr(level, name).bias[channel] = 7.0
    for r in head(features()):
        for anchor, position in marks.values():
            assert torch.all(r[:, anchor, :, :, position] == 7.0)
            r[:, anchor, :, :, position] = 0.0
        assert torch.all(r == 0.0)


def test_lines_up_with_the_coupled_yolov5n_cell_by_cell() -> None:
    teacher = YoloModel("yolov5n-decoupled").eval()
    student = YoloModel("yolov5n", nc=1, names=["ball"]).eval()
    assert isinstance(teacher.detect, DecoupledDetect) and isinstance(student.detect, Detect)
    assert teacher.detect.output_name == "detection" and teacher.detect.nc == 1
    assert torch.equal(teacher.stride, student.stride)
    assert torch.equal(teacher.detect.anchors, student.detect.anchors)
    assert torch.equal(teacher.detect.anchors_px, torch.tensor(ANCHORS, dtype=torch.float32).view(3, 3, 2))
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        t_raw, s_raw = teacher(x)["detection"], student(x)["detection"]
        assert [r.shape for r in t_raw] == [r.shape for r in s_raw]
        t_rows, s_rows = teacher.predict(x)["detection"], student.predict(x)["detection"]
    assert t_rows.shape == s_rows.shape == (1, 3 * (12 * 20 + 6 * 10 + 3 * 5), 6)
    # the same raw values decode to the same rows: both heads share one decoder and one set of anchors
    assert torch.equal(teacher.detect.inference(s_raw), s_rows)


def test_bias_priors_like_detect() -> None:
    torch.manual_seed(0)
    head = YoloModel("yolov5n-decoupled", nc=2, names=["a", "b"]).detect
    for level, stride in zip(head.m, (8, 16, 32)):
        bound = 1 / level.obj_pred.in_channels ** 0.5  # PyTorch's default bias init range
        obj_prior = np.log(8 / (640 / stride) ** 2)
        cls_prior = np.log(0.6 / (2 - 0.99))
        assert torch.all((level.obj_pred.bias - obj_prior).abs() <= bound)
        assert torch.all((level.cls_pred.bias - cls_prior).abs() <= bound)
        assert torch.all(level.reg_pred.bias.abs() <= bound)  # box offsets keep the default init


def test_fuse_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = YoloModel("yolov5n-decoupled").eval()
    x = torch.rand(1, 3, 64, 64)
    before = model.predict(x)["detection"]
    after = model.fuse().predict(x)["detection"]
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_gradients_reach_each_branch_that_has_a_loss() -> None:
    """Box and objectness train the regression branch; the class branch trains only with
    several classes (at nc=1 YOLOv5's loss has no class term, so its logit keeps the prior)."""
    torch.manual_seed(0)
    for nc in (1, 2):
        # image, class, cx, cy, w, h: small to large boxes, so every level has positives
        targets = torch.tensor([[0, nc - 1, 0.5, 0.5, 0.3, 0.4], [1, 0, 0.3, 0.6, 0.2, 0.2],
                                [1, 0, 0.5, 0.5, 0.9, 0.8]])
        model = YoloModel("yolov5n-decoupled", nc=nc, names=[str(i) for i in range(nc)])
        raw = model(torch.rand(2, 3, 64, 64))["detection"]
        loss, _ = DetectionLoss(model.detect.anchors, nc, imgsz=64)(raw, targets)
        loss.backward()
        head = model.detect
        for part in ("stem", "reg_convs", "reg_pred", "obj_pred"):
            assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in head_parameters(head, part)), part
        cls_grads = [p.grad for p in head_parameters(head, "cls_convs") + head_parameters(head, "cls_pred")]
        if nc == 1:
            assert all(g is None or float(g.abs().sum()) == 0 for g in cls_grads)
        else:
            assert all(g is not None and float(g.abs().sum()) > 0 for g in cls_grads)


# --------------------------------------------------------------------------- YAML
def test_shipped_configs() -> None:
    assert set(CONFIGS) <= set(builtin_configs())
    plain, typed = (YoloModel(name) for name in CONFIGS)
    assert set(plain.heads) == {"detection"}
    assert set(typed.heads) == {"detection", "type"} and isinstance(typed.heads["type"], ObjectTypeHead)
    assert typed.type_names == ["basketball", "football", "tennis-ball"]
    for model in (plain, typed):
        assert model.detect.hidden == 64 and model.model[HEAD_ROW] is model.detect
    x = torch.rand(2, 3, 64, 64)
    out = typed.eval().predict(x)
    assert out["detection"].shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 6)
    assert out["type"].shape == (2, out["detection"].shape[1], 3)
    # the detector rows are yolov5n's: same tensors under the same names up to the head
    coco = YoloModel("yolov5n").state_dict()
    own = plain.state_dict()
    below_head = {k for k in coco if int(k.split(".")[1]) < HEAD_ROW}
    assert all(k in own and own[k].shape == coco[k].shape for k in below_head)


def test_bad_rows_are_config_errors() -> None:
    config = load_model_config("yolov5n-decoupled")
    cases = {
        "args must be \\[nc, anchors": ["nc"],
        "needs explicit anchors": ["nc", 3],
        "nc must be a positive integer": [0, "anchors"],
        "hidden width must be a positive integer": ["nc", "anchors", 0],
        "2 anchor levels for 3 inputs": ["nc", [[10, 13], [30, 61]]],
    }
    for message, args in cases.items():
        config["head"][-1] = [[17, 20, 23], 1, "DecoupledDetect", args]
        with pytest.raises(ConfigError, match=f"row 24 \\(DecoupledDetect\\): {message}"):
            YoloModel(config)
    config["head"][-1] = [[17, 20, 23], 1, "DecoupledDetect", ["nc", "anchors", True]]
    with pytest.raises(ConfigError, match="hidden width"):
        YoloModel(config)


@pytest.mark.parametrize("module", ["mhyolo.model.yolo", "mhyolo.model.registry", "mhyolo.model.decoupled"])
def test_registered_whatever_is_imported_first(module: str) -> None:
    assert_layers_registered_after(module, ["DecoupledDetect"])


# ------------------------------------------------------------------------ weights
@pytest.mark.parametrize("name", CONFIGS)
def test_coco_weights_fill_every_row_but_the_new_heads(name: str, official_weights: Path) -> None:
    coco = import_official(official_weights).state_dict
    model = YoloModel(name)
    count, skipped = transfer_weights(model, coco)
    own = model.state_dict()
    new_rows = {str(HEAD_ROW)} | ({"25"} if name.endswith("typehead-lite") else set())
    assert skipped and {k.split(".")[1] for k in skipped} == new_rows
    assert set(skipped) == {k for k in own if k.split(".")[1] in new_rows} - {f"model.{HEAD_ROW}.anchors"}
    assert count == len(own) - len(skipped) == 343  # yolov5n's 349 tensors less Detect's 6 output convs
    for key, value in coco.items():
        if int(key.split(".")[1]) < HEAD_ROW or key.endswith(".anchors"):
            assert torch.equal(own[key], value), key


def test_class_init_is_refused_not_copied(official_weights: Path) -> None:
    coco = import_official(official_weights).state_dict
    model = YoloModel("yolov5n-decoupled")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="class_init: 32 .*DecoupledDetect.*remove class_init"):
        transfer_weights(model, coco, seed_class=32)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-copied
    with pytest.raises(ConfigError, match="class_init"):
        build_training_model(str(official_weights), "yolov5n-decoupled-typehead-lite", ["ball"], seed_class=32)


# ------------------------------------------------------------------------- export
def test_export_graph_reads_back_to_what_the_model_predicts() -> None:
    from mhyolo.deploy.graph import ExportGraph
    from mhyolo.infer.layout import reconstruct

    torch.manual_seed(0)
    model = YoloModel("yolov5n-decoupled-typehead-lite", nc=2, names=["a", "b"]).eval()
    graph = ExportGraph(model, 96)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = model.predict(x)
        outputs = graph.named_outputs(x)
    assert list(outputs) == [f"{k}_{p}" for p in ("p3", "p4", "p5") for k in ("boxes", "scores")] + \
        ["types_p3", "types_p4", "types_p5"]
    assert outputs["boxes_p3"].shape == (2, 3 * 4, 12, 12) and outputs["scores_p3"].shape == (2, 3 * 3, 12, 12)
    got = reconstruct({k: v.numpy() for k, v in outputs.items()}, graph.metadata)
    for key in ("detection", "type"):
        torch.testing.assert_close(torch.from_numpy(got[key]), expected[key], atol=1e-5, rtol=1e-5)


def _detecting_decoupled_model(official_weights: Path, images: list[np.ndarray], imgsz: int) -> YoloModel:
    """yolov5n-decoupled with the COCO backbone and neck, its head's objectness bias raised so
    that at least 21 cells of every image score 0.29 or more (the check keeps boxes over 0.25):
    the runtime's detections are compared, not only its tensors."""
    from mhyolo.infer.preprocess import letterbox, to_float_batch

    torch.manual_seed(0)
    model = YoloModel("yolov5n-decoupled", names=["ball"])
    transfer_weights(model, import_official(official_weights).state_dict)
    model.eval()
    x = torch.from_numpy(to_float_batch([letterbox(image, imgsz)[0] for image in images]))
    with torch.no_grad():
        scores = torch.cat([r[..., 4].reshape(len(images), -1) for r in model(x)["detection"]], 1)
        cut = float(scores.sort(1, descending=True).values[:, 20].min())
        for level in model.detect.m:  # objectness logit `cut` becomes 0.3; x the class prior 0.98
            level.obj_pred.bias += float(np.log(0.3 / 0.7)) - cut
    return model


def test_onnx_export_matches_pytorch_in_onnx_runtime(official_weights: Path, shared: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")
    from mhyolo.deploy.check import read_images
    from mhyolo.deploy.export import export_checked
    from mhyolo.infer.onnx_metadata import read_onnx_metadata
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend

    paths = [shared / "images" / "bus.jpg", shared / "images" / "zidane.jpg"]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"sample images absent: {paths}")
    images = read_images(paths)
    imgsz = 320
    model = _detecting_decoupled_model(official_weights, images, imgsz)
    result = export_checked(model, tmp_path / "decoupled.onnx", "onnx", imgsz, images)
    assert result.check.ok, result.check.problems
    assert max(d.max_abs_diff for d in result.check.diffs) <= 1e-4
    assert len(result.check.diffs) == 6 and min(result.check.detections) >= 10
    meta = read_onnx_metadata(result.path)
    assert meta.names == ["ball"] and meta.strides == [8.0, 16.0, 32.0]
    torch.testing.assert_close(torch.tensor(meta.anchors_px), model.detect.anchors_px)
    backend = OnnxRuntimeBackend(result.path, threads=1)
    x = torch.rand(1, 3, imgsz, imgsz)
    decoded = backend.predict(x)["detection"]
    with torch.no_grad():
        expected = model.predict(x)["detection"]
    assert decoded.shape == expected.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), 6)
    torch.testing.assert_close(torch.from_numpy(decoded), expected, atol=2e-3, rtol=1e-4)  # pixels: boxes, probabilities: 1e-4


# ------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny_data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ball_dataset(shared, tmp_path_factory.mktemp("tiny"), per_type_train=2, per_type_val=1)


def _train_args(data: Path, out: Path, weights: Path) -> list[str]:
    return ["train", "--data", str(data), "--model", "yolov5n-decoupled-typehead-lite", "--weights", str(weights),
            "--epochs", "1", "--imgsz", "128", "--batch", "2", "--workers", "0", "--out", str(out), "--quiet"]


def test_cli_trains_the_decoupled_multihead_model(tiny_data: Path, tmp_path: Path, official_weights: Path) -> None:
    from mhyolo.cli import main

    run = tmp_path / "run"
    assert main(_train_args(tiny_data, run, official_weights)) == 0
    lines = (run / "results.csv").read_text().splitlines()
    header, values = lines[0].split(","), lines[1].split(",")
    assert len(lines) == 2 and {"train/box", "train/obj", "train/type"} <= set(header)
    row = dict(zip(header, values))
    assert all(np.isfinite(float(row[k])) and float(row[k]) > 0 for k in ("train/box", "train/obj", "train/type"))
    last = load_checkpoint(run / "weights" / "last.safetensors")
    assert last.metadata["weights_source"] == f"{official_weights.name} (343/457 tensors; new: 114)"
    assert last.metadata["ema_updates"] >= 1
    model = last.model
    assert isinstance(model.detect, DecoupledDetect) and isinstance(model.heads["type"], ObjectTypeHead)
    coco = import_official(official_weights).state_dict
    raw = {k[len("train/"):]: v for k, v in last.extra.items() if k.startswith("train/")}
    assert not torch.equal(raw["model.0.conv.weight"], coco["model.0.conv.weight"])  # the optimizer stepped
    out = model.predict(torch.rand(1, 3, 128, 128))
    rows = 3 * (16 * 16 + 8 * 8 + 4 * 4)
    assert out["detection"].shape == (1, rows, 6) and out["type"].shape == (1, rows, 3)
    assert (run / "weights" / "best.safetensors").is_file()


def test_cli_train_with_class_init_fails_before_writing_weights(tiny_data: Path, tmp_path: Path,
                                                                 official_weights: Path, capsys) -> None:
    from mhyolo.cli import main

    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("class_init: 32\n")
    run = tmp_path / "run"
    assert main(_train_args(tiny_data, run, official_weights) + ["--hyp", str(hyp)]) != 0
    err = capsys.readouterr().err
    assert "class_init: 32" in err and "DecoupledDetect" in err
    assert not (run / "weights").exists()
