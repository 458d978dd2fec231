"""The optimiser's parameter groups, the learning-rate / momentum schedule and the EMA decay,
checked against values worked out by hand (the numbers in the comments), not against the code's formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.ema import ModelEMA
from mhyolo.train.optim import apply_schedule, build_optimizer

# YOLOv5's defaults, as OptimConfig ships them
LR0, LRF, MOMENTUM, WARMUP_MOMENTUM, WARMUP_BIAS_LR = 0.01, 0.01, 0.937, 0.8, 0.1


class Tiny(nn.Module):
    """One of each kind of parameter: conv/linear weights, biases, normalisation weights, a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.ln = nn.LayerNorm(2)
        self.gn = nn.GroupNorm(1, 4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _by_kind(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {group["kind"]: group for group in optimizer.param_groups}


def test_norm_and_bias_groups_get_no_weight_decay_and_weights_get_the_scaled_one() -> None:
    model = Tiny()
    config = OptimConfig(weight_decay=0.0005, nominal_batch=64)
    groups = _by_kind(build_optimizer(model, config, batch=8, accumulate=2))
    ids = {kind: {id(p) for p in group["params"]} for kind, group in groups.items()}
    assert ids["weight"] == {id(model.conv.weight), id(model.head.weight)}
    assert ids["norm"] == {id(model.bn.weight), id(model.ln.weight), id(model.gn.weight)}
    assert ids["bias"] == {id(model.bn.bias), id(model.head.bias), id(model.ln.bias), id(model.gn.bias)}
    assert groups["norm"]["weight_decay"] == 0.0 and groups["bias"]["weight_decay"] == 0.0
    # 8 images x 2 accumulated batches = 16 images a step, a quarter of the nominal 64: 0.0005 / 4
    assert groups["weight"]["weight_decay"] == pytest.approx(0.000125, rel=1e-12)


def test_a_real_model_puts_every_batchnorm_weight_and_bias_out_of_weight_decay() -> None:
    from mhyolo.model.yolo import YoloModel

    model = YoloModel("yolov5n-typehead", nc=1)
    optimizer = build_optimizer(model, OptimConfig(), batch=16, accumulate=4)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(names.values())  # every trainable parameter, once
    for name, param in model.named_parameters():
        norm_or_bias = name.endswith(".bias") or ".bn." in name
        assert (id(param) not in decay) == norm_or_bias, name


def _schedule(optimizer, epoch: int, iteration: int, epochs: int = 10, warmup: int = 200) -> dict[str, tuple]:
    apply_schedule(optimizer, OptimConfig(), epoch, epochs, iteration, warmup)
    return {kind: (group["lr"], group["momentum"]) for kind, group in _by_kind(optimizer).items()}


def test_warm_up_starts_biases_high_weights_at_zero_and_momentum_low() -> None:
    optimizer = build_optimizer(Tiny(), OptimConfig(), batch=16, accumulate=4)
    start = _schedule(optimizer, epoch=0, iteration=0)
    assert start["bias"] == (pytest.approx(WARMUP_BIAS_LR), pytest.approx(WARMUP_MOMENTUM))
    assert start["weight"] == (0.0, pytest.approx(WARMUP_MOMENTUM))
    assert start["norm"] == (0.0, pytest.approx(WARMUP_MOMENTUM))

    # half-way through a 200-iteration warm-up, in epoch 1 of 10: the cosine target is
    # 0.01 x (1 - 0.99 x (1 - cos(pi/10)) / 2) = 0.01 x 0.975772975566 = 0.00975772975566;
    # biases fall half-way from 0.1 to it, the others rise half-way from 0, momentum half-way 0.8 -> 0.937
    mid = _schedule(optimizer, epoch=1, iteration=100)
    assert mid["bias"][0] == pytest.approx(0.0548788648778305, rel=1e-9)
    assert mid["weight"][0] == pytest.approx(0.00487886487783051, rel=1e-9)
    assert mid["norm"][0] == pytest.approx(0.00487886487783051, rel=1e-9)
    assert [m for _, m in mid.values()] == [pytest.approx(0.8685)] * 3


def test_after_warm_up_every_group_follows_the_cosine_down_to_lr0_times_lrf() -> None:
    optimizer = build_optimizer(Tiny(), OptimConfig(), batch=16, accumulate=4)
    first = _schedule(optimizer, epoch=0, iteration=250)  # warm-up over, first epoch: lr0 and full momentum
    assert list(first.values()) == [(pytest.approx(LR0), pytest.approx(MOMENTUM))] * 3
    # the last epoch of 10: 0.01 x (1 - 0.99 x (1 - cos(9 pi / 10)) / 2) = 0.01 x 0.0342270244339
    last = _schedule(optimizer, epoch=9, iteration=5000)
    assert list(last.values()) == [(pytest.approx(0.000342270244338989, rel=1e-9), pytest.approx(MOMENTUM))] * 3
    # where the cosine ends (epoch 10 of 10): exactly lr0 x lrf = 0.0001
    end = _schedule(optimizer, epoch=10, iteration=6000)
    assert list(end.values()) == [(pytest.approx(LR0 * LRF, rel=1e-12), pytest.approx(MOMENTUM))] * 3


def test_ema_decay_ramps_up_as_0_9999_times_one_minus_exp_of_minus_updates_over_2000() -> None:
    config = TrainConfig()
    assert (config.ema_decay, config.ema_tau) == (0.9999, 2000.0)  # the constants the trainer hands the EMA
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema = ModelEMA(model)
    with torch.no_grad():
        model.weight.fill_(10.0)
    ema.update(model)
    # 1 update: d = 0.9999 x (1 - e^(-1/2000)) = 0.000499825033328626; EMA = 2 d + 10 (1 - d)
    assert ema.module.weight.item() == pytest.approx(10 - 8 * 0.000499825033328626, rel=1e-12)

    with torch.no_grad():
        model.weight.fill_(2.0)
    late = ModelEMA(model, updates=1999)
    with torch.no_grad():
        model.weight.fill_(10.0)
    late.update(model)
    # the 2000th update: d = 0.9999 x (1 - e^-1) = 0.632057346772675
    assert late.updates == 2000
    assert late.module.weight.item() == pytest.approx(10 - 8 * 0.632057346772675, rel=1e-12)


def test_ema_copies_integer_buffers_and_frozen_names_unaveraged() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).double()
    ema = ModelEMA(model, updates=1999, copy_only={"0.weight"})
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[0].bias.fill_(3.0)
    model[1].num_batches_tracked.fill_(7)
    before = ema.module[0].bias.item()
    ema.update(model)
    assert ema.module[0].weight.item() == 3.0  # copied as it is, not averaged
    assert ema.module[1].num_batches_tracked.item() == 7
    assert ema.module[0].bias.item() == pytest.approx(0.632057346772675 * before + (1 - 0.632057346772675) * 3.0,
                                                      rel=1e-12)
