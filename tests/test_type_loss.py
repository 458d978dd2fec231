"""Type losses: hand-computed cross-entropies, positives-only gradients, the largest-box
rule for image types, and the per-object head learning through the real assignment."""

from __future__ import annotations

import math

import pytest
import torch

from mhyolo.errors import MhyoloError
from mhyolo.model.type_heads import ObjectTypeHead
from mhyolo.train.assign import LevelTargets
from mhyolo.train.loss import DetectionLoss
from mhyolo.train.type_loss import NO_TYPE, ImageTypeLoss, ObjectTypeLoss, image_types

SHAPES = [(4, 4), (2, 2)]  # two small levels


def positives(cells: list[tuple[int, int, int, int, int]]) -> LevelTargets:
    """LevelTargets from (image, anchor, gy, gx, label) rows; box fields are irrelevant here."""
    n = len(cells)
    columns = list(zip(*cells)) if cells else [()] * 5
    image, anchor, gy, gx, label = (torch.tensor(c, dtype=torch.long) for c in columns)
    return LevelTargets(image=image, anchor=anchor, gy=gy, gx=gx, box=torch.zeros(n, 4),
                        anchor_wh=torch.ones(n, 2), label=label, target=torch.arange(n))


def zero_raw(batch: int = 2, ntypes: int = 3) -> list[torch.Tensor]:
    return [torch.zeros(batch, 3, h, w, ntypes, requires_grad=True) for h, w in SHAPES]


# ------------------------------------------------------------------- object loss
def test_zero_logits_give_log_ntypes() -> None:
    raw = zero_raw(ntypes=3)
    assigned = [positives([(0, 0, 1, 2, 0), (1, 2, 3, 3, 2)]), positives([(1, 1, 0, 1, 1)])]
    assert float(ObjectTypeLoss()(raw, assigned).detach()) == pytest.approx(math.log(3), rel=1e-6)


def test_known_logits_give_hand_computed_mean_over_all_levels() -> None:
    raw = [r.detach().clone() for r in zero_raw()]
    raw[0][0, 1, 2, 3] = torch.tensor([2.0, 0.0, -1.0])
    raw[1][1, 0, 1, 0] = torch.tensor([0.5, 0.5, 3.0])
    assigned = [positives([(0, 1, 2, 3, 0)]), positives([(1, 0, 1, 0, 2), (0, 2, 0, 0, 1)])]

    def ce(logits: list[float], label: int) -> float:
        return -logits[label] + math.log(sum(math.exp(v) for v in logits))

    expected = (ce([2.0, 0.0, -1.0], 0) + ce([0.5, 0.5, 3.0], 2) + ce([0.0, 0.0, 0.0], 1)) / 3
    assert float(ObjectTypeLoss()(raw, assigned).detach()) == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_matches_its_definition() -> None:
    raw = [r.detach().clone() for r in zero_raw()]
    logits = [1.0, -2.0, 0.5]
    raw[0][0, 0, 0, 0] = torch.tensor(logits)
    assigned = [positives([(0, 0, 0, 0, 1)]), positives([])]
    log_z = math.log(sum(math.exp(v) for v in logits))
    nll = [log_z - v for v in logits]
    eps = 0.1
    expected = (1 - eps) * nll[1] + eps * sum(nll) / 3
    assert float(ObjectTypeLoss(label_smoothing=eps)(raw, assigned)) == pytest.approx(expected, rel=1e-6)


def test_gradients_reach_only_positive_cells() -> None:
    torch.manual_seed(0)
    raw = [torch.randn(2, 3, h, w, 3, requires_grad=True) for h, w in SHAPES]
    cells = [[(0, 1, 2, 3, 0), (1, 2, 0, 0, 2)], [(1, 0, 1, 1, 1)]]
    ObjectTypeLoss()(raw, [positives(c) for c in cells]).backward()
    for r, level_cells in zip(raw, cells):
        mask = torch.zeros(r.shape[:4], dtype=torch.bool)
        for image, anchor, gy, gx, _ in level_cells:
            mask[image, anchor, gy, gx] = True
        assert torch.all(r.grad[~mask] == 0)
        assert torch.all(r.grad[mask].abs().sum(-1) > 0)


def test_no_positives_give_zero_that_still_backpropagates() -> None:
    raw = zero_raw()
    loss = ObjectTypeLoss()(raw, [positives([]), positives([])])
    assert loss.requires_grad and float(loss.detach()) == 0.0
    loss.backward()
    assert all(r.grad is not None and torch.all(r.grad == 0) for r in raw)


def test_out_of_range_types_are_reported() -> None:
    with pytest.raises(MhyoloError, match=r"type ids must lie in \[0, 2\]"):
        ObjectTypeLoss()(zero_raw(), [positives([(0, 0, 0, 0, 3)]), positives([])])
    with pytest.raises(MhyoloError, match="2 levels of logits but 1"):
        ObjectTypeLoss()(zero_raw(), [positives([])])


def test_object_head_learns_through_the_detector_assignment() -> None:
    torch.manual_seed(0)
    anchors_px = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                               [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
    strides = torch.tensor([8.0, 16.0, 32.0])
    detection_loss = DetectionLoss(anchors_px / strides.view(-1, 1, 1), nc=1)
    head = ObjectTypeHead(3, 3, (64, 128, 256))
    x = [torch.randn(2, c, s, s) for c, s in zip((64, 128, 256), (16, 8, 4))]
    # [image, type, cx, cy, w, h]: a big, a middle and a small ball
    targets = torch.tensor([[0, 2, 0.3, 0.3, 0.1, 0.1], [0, 0, 0.7, 0.6, 0.5, 0.45], [1, 1, 0.5, 0.5, 0.25, 0.2]])
    assigned = detection_loss.assign(head(x), targets)
    assert sum(len(a) for a in assigned) > 0
    assert set(torch.cat([a.label for a in assigned]).tolist()) == {0, 1, 2}
    loss_fn = ObjectTypeLoss()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    start = float(loss_fn(head(x), assigned).detach())
    for _ in range(10):
        optimizer.zero_grad()
        loss = loss_fn(head(x), assigned)
        loss.backward()
        optimizer.step()
    assert float(loss_fn(head(x), assigned).detach()) < 0.5 * start


# -------------------------------------------------------------------- image loss
def test_image_type_is_the_type_of_the_largest_box() -> None:
    targets = torch.tensor([
        [0, 1, 0.5, 0.5, 0.2, 0.2],   # image 0: area 0.04
        [0, 2, 0.3, 0.3, 0.1, 0.5],   # image 0: area 0.05 <- largest
        [0, 0, 0.7, 0.7, 0.2, 0.1],   # image 0: area 0.02
        [2, 0, 0.5, 0.5, 0.3, 0.3],   # image 2: tie at 0.09, first row wins
        [2, 1, 0.5, 0.5, 0.3, 0.3],
        [3, 1, 0.1, 0.1, 0.05, 0.05],  # image 3: a single box
    ])
    assert image_types(targets, 4).tolist() == [2, NO_TYPE, 0, 1]
    assert image_types(targets[[2, 1, 0]], 1).tolist() == [2]  # row order does not matter
    assert image_types(torch.zeros(0, 6), 2).tolist() == [NO_TYPE, NO_TYPE]
    with pytest.raises(MhyoloError, match="batch indices"):
        image_types(targets, 3)


def test_image_loss_ignores_images_without_boxes() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [9.0, 9.0, -9.0], [0.0, 1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.1, 0.1], [0, 0, 0.5, 0.5, 0.4, 0.4], [2, 2, 0.5, 0.5, 0.3, 0.3]])
    loss = ImageTypeLoss()(logits, targets)
    expected = ((math.log(math.exp(2) + 1 + math.exp(-1)) - 2.0)
                + (math.log(2 + math.e) - 0.0)) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[1] == 0) and torch.all(logits.grad[[0, 2]].abs().sum(-1) > 0)


def test_image_loss_without_boxes_is_zero_and_differentiable() -> None:
    logits = torch.randn(2, 3, requires_grad=True)
    loss = ImageTypeLoss(label_smoothing=0.1)(logits, torch.zeros(0, 6))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_image_loss_label_smoothing() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2]])
    log_z = math.log(math.e + 1 + math.exp(-1))
    nll = [log_z - 1.0, log_z, log_z + 1.0]
    expected = 0.8 * nll[0] + 0.2 * sum(nll) / 3
    assert float(ImageTypeLoss(label_smoothing=0.2)(logits, targets)) == pytest.approx(expected, rel=1e-6)
