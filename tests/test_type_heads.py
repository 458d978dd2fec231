"""Ball-type heads: shapes, the detection-row alignment of the per-object head, YAML
building, registration, training on fixed features, and official weights transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.registry import assert_layers_registered_after

from mhyolo.errors import ConfigError
from mhyolo.model.type_heads import ImageTypeHead, ObjectTypeHead
from mhyolo.model.weights import import_official
from mhyolo.model.yolo import YoloModel, builtin_config_path, load_model_config
from mhyolo.train.state import transfer_weights

CHANNELS = (64, 128, 256)  # yolov5n's P3, P4, P5 widths
CONFIGS = {"yolov5n-imagehead": "image_type", "yolov5n-typehead": "type", "yolov5n-typehead-lite": "type"}
HEAD_ROW = 25


def config_path(name: str) -> Path:
    return builtin_config_path(name)


def features(batch: int = 2, sizes: tuple[int, ...] = (8, 4, 2)) -> list[torch.Tensor]:
    return [torch.randn(batch, c, s, s) for c, s in zip(CHANNELS, sizes)]


# --------------------------------------------------------------------- image head
def test_image_head_averages_level_logits_and_returns_probabilities() -> None:
    torch.manual_seed(0)
    head = ImageTypeHead(3, CHANNELS).eval()
    x = features()
    logits = head(x)
    assert logits.shape == (2, 3)
    by_hand = torch.stack([mlp(level.mean(dim=(2, 3))) for mlp, level in zip(head.m, x)]).mean(0)
    assert torch.allclose(logits, by_hand, atol=1e-6)
    probs = head.inference(logits)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))


def test_image_head_size_matches_the_reference_design() -> None:
    head = ImageTypeHead(3, CHANNELS)
    expected = sum(c * 128 + 128 + 128 * 3 + 3 for c in CHANNELS)
    assert sum(p.numel() for p in head.parameters()) == expected == 58_889
    dropouts = [m for m in head.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.2 for d in dropouts)


# -------------------------------------------------------------------- object head
@pytest.mark.parametrize("hidden", [64, 0])
def test_object_head_has_detect_layout(hidden: int) -> None:
    torch.manual_seed(0)
    head = ObjectTypeHead(3, 3, CHANNELS, hidden=hidden).eval()
    raw = head(features(sizes=(8, 4, 2)))
    assert [tuple(r.shape) for r in raw] == [(2, 3, 8, 8, 3), (2, 3, 4, 4, 3), (2, 3, 2, 2, 3)]
    # Output channel a * ntypes + t of the final 1x1 conv must land at anchor a, type t.
    with torch.no_grad():
        for branch in head.m:
            branch[-1].weight.zero_()
            branch[-1].bias.zero_()
            branch[-1].bias[1 * 3 + 2] = 5.0
    raw = head(features())
    for r in raw:
        assert torch.all(r[:, 1, :, :, 2] == 5.0)
        r[:, 1, :, :, 2] = 0.0
        assert torch.all(r == 0.0)


def test_object_type_rows_align_with_detection_rows() -> None:
    model = YoloModel(config_path("yolov5n-typehead")).eval()
    shapes = [(8, 8), (4, 4), (2, 2)]
    cells = [(0, 0, 0, 0), (0, 2, 5, 3), (1, 1, 3, 0), (2, 0, 1, 1), (2, 2, 0, 1)]  # level, anchor, y, x
    for level, anchor, y, x in cells:
        det = [torch.full((1, 3, h, w, 6), -10.0) for h, w in shapes]
        typ = [torch.zeros(1, 3, h, w, 3) for h, w in shapes]
        det[level][0, anchor, y, x, :2] = 0.0  # box centre at the centre of its cell
        det[level][0, anchor, y, x, 4] = 10.0  # the only confident detection
        typ[level][0, anchor, y, x, 2] = 10.0  # the only cell saying "type 2"
        rows = model.detect.inference(det)
        types = model.heads["type"].inference(typ)
        assert types.shape == (1, rows.shape[1], 3)
        assert torch.allclose(types.sum(-1), torch.ones(1, rows.shape[1]))
        n = int(rows[0, :, 4].argmax())
        assert int(types[0, :, 2].argmax()) == n
        assert int(types[0, n].argmax()) == 2
        stride = float(model.stride[level])
        assert rows[0, n, :2].tolist() == pytest.approx([(x + 0.5) * stride, (y + 0.5) * stride], abs=0.01)


def test_object_head_is_lighter_than_the_detector() -> None:
    head = ObjectTypeHead(3, 3, CHANNELS)
    per_level = [9 * c * 64 + 2 * 64 + 64 * 9 + 9 for c in CHANNELS]  # 3x3 conv + BN, then 1x1 to na*ntypes
    assert sum(p.numel() for p in head.parameters()) == sum(per_level) == 260_187
    lite = ObjectTypeHead(3, 3, CHANNELS, hidden=0)  # one 1x1 conv per level, like Detect's outputs
    assert sum(p.numel() for p in lite.parameters()) == sum(c * 9 + 9 for c in CHANNELS) == 4_059


# ------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("name", CONFIGS)
def test_configs_build_with_both_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = YoloModel(config_path(name))
    assert model.type_names == ["basketball", "football", "tennis-ball"]
    assert model.detect.nc == 1 and model.stride.tolist() == [8.0, 16.0, 32.0]
    x = torch.rand(2, 3, 64, 64)
    raw = model(x)
    assert list(raw) == ["detection", CONFIGS[name]]
    out = model.eval().predict(x)
    detections = out["detection"]
    assert detections.shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 6)
    types = out[CONFIGS[name]]
    expected = (2, 3) if name.endswith("imagehead") else (2, detections.shape[1], 3)
    assert types.shape == expected
    assert torch.allclose(types.sum(-1), torch.ones(expected[:-1]), atol=1e-5)
    assert model.metadata()["type_names"] == model.type_names


def test_type_head_rows_reject_bad_args() -> None:
    config = load_model_config(config_path("yolov5n-typehead"))
    config["heads"] = [[[17, 20, 23], 1, "ObjectTypeHead", ["ntypes"]]]
    with pytest.raises(ConfigError, match=r"row 25 \(ObjectTypeHead\).*anchors"):
        YoloModel(config)
    config["heads"] = [[[17, 20, 23], 1, "ImageTypeHead", [1]]]
    with pytest.raises(ConfigError, match="ntypes must be at least 2"):
        YoloModel(config)
    config["heads"] = [[[17, 20, 23], 1, "ObjectTypeHead", ["ntypes", [[10, 13], [30, 61]]]]]
    with pytest.raises(ConfigError, match="2 anchor levels for 3 inputs"):
        YoloModel(config)
    for hidden in (-1, True, 1.5):
        config["heads"] = [[[17, 20, 23], 1, "ObjectTypeHead", ["ntypes", 3, hidden]]]
        with pytest.raises(ConfigError, match="hidden width"):
            YoloModel(config)


@pytest.mark.parametrize("module", ["mhyolo.model.yolo", "mhyolo.model.type_heads", "mhyolo.model.registry"])
def test_heads_are_registered_whatever_is_imported_first(module: str) -> None:
    assert_layers_registered_after(module, ["ImageTypeHead", "ObjectTypeHead"])


# --------------------------------------------------------------------- training
def test_heads_learn_fixed_features() -> None:
    torch.manual_seed(0)
    x = features(batch=6)
    image_head = ImageTypeHead(3, CHANNELS)
    object_head = ObjectTypeHead(3, 3, CHANNELS)
    image_labels = torch.tensor([0, 1, 2, 0, 1, 2])
    object_labels = [torch.randint(0, 3, (6, 3, s, s)) for s in (8, 4, 2)]

    def image_loss() -> torch.Tensor:
        return F.cross_entropy(image_head(x), image_labels)

    def object_loss() -> torch.Tensor:
        raw = object_head(x)
        return sum(F.cross_entropy(r.reshape(-1, 3), t.reshape(-1)) for r, t in zip(raw, object_labels))

    for head, loss_fn in ((image_head, image_loss), (object_head, object_loss)):
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
        start = float(loss_fn().detach())
        for _ in range(15):
            optimizer.zero_grad()
            loss = loss_fn()
            loss.backward()
            optimizer.step()
        assert float(loss_fn().detach()) < 0.7 * start


# ---------------------------------------------------------------------- weights
@pytest.mark.parametrize("name", CONFIGS)
def test_official_weights_transfer_into_detector_rows(name: str, official_weights: Path) -> None:
    imported = import_official(official_weights)
    model = YoloModel(config_path(name))
    count, skipped = transfer_weights(model, imported.state_dict)
    own = model.state_dict()
    head_keys = {k for k in own if k.startswith(f"model.{HEAD_ROW}.")}
    detect_outputs = {f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert head_keys and set(skipped) == detect_outputs | head_keys
    assert count == len(own) - len(skipped) == 349 - len(detect_outputs)
    for key in ("model.0.conv.weight", "model.17.cv3.bn.running_mean", "model.24.anchors"):
        assert torch.equal(own[key], imported.state_dict[key])
