"""The mask head (prototypes + per-row coefficients) and the ellipse mask loss: shapes, COCO weights
kept in the detector rows, the ellipse targets, and a loss that trains (masks kept inside their boxes:
tests/test_mask_inference.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mhyolo.errors import ConfigError
from mhyolo.model.mask_head import MaskHead
from mhyolo.model.weights import import_official
from mhyolo.model.yolo import YoloModel
from mhyolo.train.loss import LossConfig
from mhyolo.train.mask_loss import ellipse_targets
from mhyolo.train.objective import ObjectiveConfig, TrainingObjective
from mhyolo.train.state import transfer_weights


def test_the_seg_models_give_prototypes_and_a_coefficient_per_detection_row() -> None:
    torch.manual_seed(0)
    model = YoloModel("yolov5n-seg-typehead-lite", nc=1, names=["ball"]).eval()
    raw = model(torch.rand(2, 3, 128, 96))
    prototypes, levels = raw["masks"]
    assert prototypes.shape == (2, 32, 32, 24)  # a quarter of the input
    assert [tuple(c.shape) for c in levels] == [(2, 3, 16, 12, 32), (2, 3, 8, 6, 32), (2, 3, 4, 3, 32)]
    assert [tuple(d.shape[:4]) for d in raw["detection"]] == [tuple(c.shape[:4]) for c in levels]
    assert "type" in raw
    _, rows = model.heads["masks"].inference(raw["masks"])
    detections = model.predict(torch.rand(2, 3, 128, 96))["detection"]
    assert rows.shape[:2] == detections.shape[:2]  # row n of the masks is detection row n


def test_coco_weights_fill_the_detector_rows_and_leave_the_mask_head_new(official_weights: Path) -> None:
    imported = import_official(official_weights)
    model = YoloModel("yolov5n-seg", nc=1, names=["ball"])
    before = {k: v.clone() for k, v in model.state_dict().items() if ".25." in k}
    count, skipped = transfer_weights(model, imported.state_dict, None, imported.config)
    state = model.state_dict()
    backbone = "model.0.conv.weight"
    assert torch.equal(state[backbone], imported.state_dict[backbone].float())
    assert all(torch.equal(state[k], v) for k, v in before.items())  # the mask head (row 25) untouched
    assert count >= len(imported.state_dict) - 10 and all(".25." in k or ".24." in k for k in skipped)


def test_ellipse_targets_fill_pi_w_h_over_4_of_the_grid() -> None:
    boxes = torch.tensor([[0.5, 0.5, 0.6, 0.4], [0.25, 0.75, 0.2, 0.2]], dtype=torch.float64)
    ellipse, box = ellipse_targets(boxes, 200, 300)
    for i, (_, _, w, h) in enumerate(boxes.tolist()):
        expected = math.pi * (w * 300) * (h * 200) / 4
        assert abs(float(ellipse[i].sum()) - expected) / expected < 0.02
        assert abs(float(box[i].sum()) - w * 300 * h * 200) / (w * 300 * h * 200) < 0.02
    assert bool((ellipse <= box).all())  # the ellipse lies inside its box


def test_the_ellipse_mask_term_trains_the_mask_head() -> None:
    """A few SGD steps on one batch lower the mask loss; the term needs a model with a mask head."""
    torch.manual_seed(0)
    model = YoloModel("yolov5n-seg", nc=1, names=["ball"])
    objective = TrainingObjective(model, LossConfig(), 128, ObjectiveConfig(terms={"ellipse_mask": {"weight": 1.0}}))
    images = torch.rand(2, 3, 128, 128)
    targets = torch.tensor([[0, 0, 0.4, 0.5, 0.3, 0.3], [1, 0, 0.6, 0.3, 0.2, 0.25]])
    head = model.heads["masks"]
    assert isinstance(head, MaskHead)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(25):
        optimiser.zero_grad()
        total, parts = objective(model(images), targets)
        losses.append(float(parts["mask"]))
        total.backward()
        optimiser.step()
    assert losses[-1] < 0.6 * losses[0], losses
    with pytest.raises(ConfigError, match="no mask head"):
        TrainingObjective(YoloModel("yolov5n", nc=1, names=["ball"]), LossConfig(), 128,
                          ObjectiveConfig(terms={"ellipse_mask": {}}))
    with pytest.raises(ConfigError, match="ellipse_mask"):
        TrainingObjective(model, LossConfig(), 128, ObjectiveConfig(terms={"ellipse_mask": {"weigth": 1}}))


def test_bad_mask_head_rows_are_refused() -> None:
    config = YoloModel("yolov5n-seg", nc=1, names=["ball"]).yaml
    for args, message in (([0, 3], "nm"), ([32], "args must be"), ([32, "x"], "anchor count"), ([32, 3, -1], "proto")):
        bad = dict(config, heads=[[[17, 20, 23], 1, "MaskHead", args]])
        with pytest.raises(ConfigError, match=message):
            YoloModel(bad, nc=1, names=["ball"])
