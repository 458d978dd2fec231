"""The detection loss and its target assignment on hand-made cases with known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mhyolo.model.yolo import build_model
from mhyolo.train.assign import assign_targets
from mhyolo.train.loss import DetectionLoss, LossConfig

GRIDS = [(8, 8), (4, 4), (2, 2)]  # a 64x64 input at strides 8, 16, 32


def _anchors() -> torch.Tensor:
    return build_model("yolov5n", nc=1, names=["ball"]).detect.anchors.clone()


def test_assignment_uses_own_cell_and_the_two_nearest_neighbours() -> None:
    # centre at grid (x=2.3, y=2.7) on the 8x8 level: the left (x 1) and lower (y 3) neighbours join
    targets = torch.tensor([[0, 2, 2.3 / 8, 2.7 / 8, 1.25 / 8, 1.625 / 8]])
    level0 = assign_targets(targets, _anchors(), GRIDS, anchor_t=1.0001)[0]
    cells = sorted(zip(level0.gx.tolist(), level0.gy.tolist()))
    assert cells == [(1, 2), (2, 2), (2, 3)]
    assert level0.anchor.tolist() == [0, 0, 0]  # only the anchor with exactly the box's shape passes 1.0001
    assert level0.label.tolist() == [2, 2, 2] and level0.target.tolist() == [0, 0, 0]
    # offsets are relative to each cell, so the neighbours see the centre outside [0, 1)
    offsets = {(x, y): box[:2].tolist() for x, y, box in zip(level0.gx.tolist(), level0.gy.tolist(), level0.box)}
    assert offsets[(1, 2)] == pytest.approx([1.3, 0.7], abs=1e-5)
    assert offsets[(2, 3)] == pytest.approx([0.3, -0.3], abs=1e-5)


def test_anchor_ratio_threshold_selects_anchors_and_levels() -> None:
    # a 10x13 px box (anchor 0 of P3) and a 60x60 px box, with anchor_t = 2:
    # 60/16 = 3.75 grid on P4: anchor 1 (62x45) ratios 1.03, 1.33 and anchor 2 (59x119) ratios 1.02, 1.98
    # are kept, anchor 0 (30x61) ratio 2.0 is not; on P3 every anchor has a ratio >= 2
    targets = torch.tensor([[1, 0, 0.5, 0.5, 10 / 64, 13 / 64], [0, 1, 0.5, 0.5, 60 / 64, 60 / 64]])
    levels = assign_targets(targets, _anchors(), GRIDS, anchor_t=2.0)
    assert set(levels[0].target.tolist()) == {0} and set(levels[0].image.tolist()) == {1}
    assert set(levels[1].target.tolist()) == {1} and set(levels[1].anchor.tolist()) == {1, 2}
    assert set(levels[2].target.tolist()) == {1}  # 116x90 px: ratios 1.93, 1.5


def test_no_targets_gives_empty_assignment() -> None:
    levels = assign_targets(torch.zeros((0, 6)), _anchors(), GRIDS)
    assert all(len(level) == 0 for level in levels)


def _raw(nc: int, obj_logit: float) -> list[torch.Tensor]:
    return [torch.zeros(1, 3, h, w, 5 + nc) + torch.tensor([0, 0, 0, 0, obj_logit] + [0] * nc) for h, w in GRIDS]


def test_loss_value_matches_hand_computation() -> None:
    anchors = _anchors()
    loss_fn = DetectionLoss(anchors, nc=1, config=LossConfig(anchor_t=1.0001), imgsz=64)
    # one ball centred in cell (3, 3) of P3, exactly the shape of anchor 0 (10x13 px)
    targets = torch.tensor([[0, 0, 3.5 / 8, 3.5 / 8, 1.25 / 8, 1.625 / 8]])
    raw = _raw(nc=1, obj_logit=-2.0)
    # predicted w and h twice the anchor: (2 * sigmoid(t))^2 = 2
    t = math.log((math.sqrt(2) / 2) / (1 - math.sqrt(2) / 2))
    raw[0][0, 0, 3, 3, 2:4] = t
    total, parts = loss_fn(raw, targets)

    # Same centre and aspect ratio, 4x the area: CIoU = IoU = 1/4, box term 1 - 1/4.
    box = (1 - 0.25) * 0.05
    sp = F.softplus(torch.tensor(-2.0)).item()  # BCE(logit -2, target 0)
    # P3 has 192 cells x anchors, one of them with target 0.25: BCE = softplus(x) - t*x
    level0 = (191 * sp + (sp + 0.25 * 2.0)) / 192
    obj = (4.0 * level0 + 1.0 * sp + 0.4 * sp) * 1.0 * (64 / 640) ** 2
    assert parts["box"].item() == pytest.approx(box, rel=1e-5)
    assert parts["obj"].item() == pytest.approx(obj, rel=1e-5)
    assert parts["cls"].item() == 0.0  # no class term for a one-class detector
    assert total.item() == pytest.approx(box + obj, rel=1e-5)


def test_class_term_only_with_several_classes() -> None:
    anchors = _anchors()
    targets = torch.tensor([[0, 2, 3.5 / 8, 3.5 / 8, 1.25 / 8, 1.625 / 8]])
    loss_fn = DetectionLoss(anchors, nc=3, config=LossConfig(anchor_t=1.0001), imgsz=64)
    _, parts = loss_fn(_raw(nc=3, obj_logit=0.0), targets)
    # zero class logits against a one-hot target: BCE = log 2 per element
    assert parts["cls"].item() == pytest.approx(math.log(2) * 0.5 * 3 / 80, rel=1e-5)


def test_loss_gradient_flows_to_the_positive_cell_only_for_boxes() -> None:
    anchors = _anchors()
    loss_fn = DetectionLoss(anchors, nc=1, config=LossConfig(anchor_t=1.0001), imgsz=64)
    targets = torch.tensor([[0, 0, 3.5 / 8, 3.5 / 8, 1.25 / 8, 1.625 / 8]])
    raw = [r.requires_grad_() for r in _raw(nc=1, obj_logit=0.0)]
    raw[0].data[0, 0, 3, 3, 2:4] = 0.5
    total, _ = loss_fn(raw, targets)
    total.backward()
    grad_box = raw[0].grad[..., :4].abs().sum(-1)
    assert grad_box[0, 0, 3, 3] > 0
    grad_box[0, 0, 3, 3] = 0
    assert grad_box.sum() == 0
