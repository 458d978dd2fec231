"""Model construction from YAML: shapes, strides, registry, config errors."""

from __future__ import annotations

import pytest
import torch

from mhyolo.errors import ConfigError
from mhyolo.model.layers import BN_EPS, BN_MOMENTUM
from mhyolo.model.yolo import build_model, builtin_config_path, load_model_config


@pytest.mark.parametrize("name", ["yolov5n", "yolov5s"])
def test_builtin_configs_build_with_official_layout(name: str) -> None:
    model = build_model(name)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert len(model.state_dict()) == 349  # same tensor count as the official checkpoints
    assert "model.24.anchors" in model.state_dict()
    raw = model(torch.zeros(2, 3, 128, 96))["detection"]
    assert [tuple(r.shape) for r in raw] == [(2, 3, 16, 12, 85), (2, 3, 8, 6, 85), (2, 3, 4, 3, 85)]


def test_all_sizes_scale_width_and_depth() -> None:
    counts = [sum(p.numel() for p in build_model(n).parameters()) for n in ("yolov5n", "yolov5s", "yolov5m")]
    assert counts[0] < counts[1] < counts[2]
    assert 1.8e6 < counts[0] < 1.95e6  # YOLOv5n: about 1.87M parameters


def test_batchnorm_matches_official_settings() -> None:
    bn = build_model("yolov5n").model[0].bn
    assert bn.eps == BN_EPS == 1e-3 and bn.momentum == BN_MOMENTUM == 0.03


def test_nc_override_reshapes_only_detect_outputs() -> None:
    model = build_model("yolov5n", nc=1, names=["ball"])
    assert model.names == ["ball"] and model.detect.no == 6
    out = model.predict(torch.zeros(1, 3, 64, 64))["detection"]
    assert out.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 6)


def test_decode_puts_a_centre_cell_prediction_at_its_cell() -> None:
    model = build_model("yolov5n", nc=1, names=["ball"]).eval()
    # logits 0 -> sigmoid 0.5 -> xy offset 0.5 -> centre of the cell; wh -> exactly the anchor
    raw = [torch.zeros(1, 3, s, s, 6) for s in (8, 4, 2)]
    rows = model.detect.inference(raw)
    first = rows[0, 0]
    assert first[:4].tolist() == pytest.approx([4.0, 4.0, 10.0, 13.0])  # cell (0,0) at stride 8, anchor 10x13
    last = rows[0, -1]
    assert last[:4].tolist() == pytest.approx([48.0, 48.0, 373.0, 326.0])  # cell (1,1) at stride 32


def test_fuse_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=1, names=["ball"]).eval()
    x = torch.rand(1, 3, 64, 64)
    before = model.predict(x)["detection"]
    after = model.fuse().predict(x)["detection"]
    assert torch.allclose(before, after, atol=1e-4)


def test_unknown_module_and_bad_rows_are_config_errors() -> None:
    cfg = load_model_config("yolov5n")
    cfg["backbone"][2] = [-1, 1, "os.system", ["echo"]]
    with pytest.raises(ConfigError, match="unknown module 'os.system'"):
        build_model(cfg)
    cfg = load_model_config("yolov5n")
    cfg["head"][2] = [[-1, 30], 1, "Concat", [1]]
    with pytest.raises(ConfigError, match="must name earlier layers"):
        build_model(cfg)
    with pytest.raises(ConfigError, match=r"model config .yolov9000.: no such file .*not a shipped name \(.*yolov5n"):
        load_model_config("yolov9000")


def test_detector_part_drops_the_type_head_and_keeps_detections() -> None:
    from mhyolo.model.yolo import YoloModel, detector_part

    config = builtin_config_path("yolov5n-typehead")
    torch.manual_seed(0)
    model = YoloModel(config, names=["ball"]).eval()
    with torch.no_grad():  # give the detector non-default values, so a fresh copy could not pass
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    detector = detector_part(model)
    assert set(detector.heads) == {"detection"}
    assert set(detector.state_dict()) < set(model.state_dict())
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(detector.predict(x)["detection"], model.predict(x)["detection"])
    assert detector.names == ["ball"] and torch.equal(detector.stride, model.stride)
