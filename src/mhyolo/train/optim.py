"""Optimizer and learning-rate schedule (YOLOv5's parameter groups, warm-up and cosine decay)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mhyolo.train.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig, batch: int, accumulate: int) -> torch.optim.Optimizer:
    """Three groups: conv/linear weights (decayed), normalisation weights and biases (not decayed)."""
    decay, no_decay, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "bias":
                biases.append(param)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                no_decay.append(param)
            else:
                decay.append(param)
    weight_decay = config.weight_decay * batch * accumulate / config.nominal_batch
    groups = [g for g in ({"params": no_decay, "weight_decay": 0.0, "kind": "norm"},
                          {"params": decay, "weight_decay": weight_decay, "kind": "weight"},
                          {"params": biases, "weight_decay": 0.0, "kind": "bias"}) if g["params"]]
    if config.optimizer == "SGD":
        return torch.optim.SGD(groups, lr=config.lr0, momentum=config.momentum, nesterov=True)
    cls = torch.optim.Adam if config.optimizer == "Adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr0, betas=(config.momentum, 0.999))


def cosine_factor(config: OptimConfig, epochs: int) -> Callable[[float], float]:
    """LR multiplier for an epoch: 1 at the start, `lrf` at the end, cosine in between."""
    return lambda epoch: ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (config.lrf - 1) + 1


def apply_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, epoch: int, epochs: int,
                   iteration: int, warmup_iterations: int) -> None:
    """Set every group's lr (and momentum during warm-up) for this iteration.

    During warm-up, biases start high (`warmup_bias_lr`) and fall to the scheduled lr
    while the other groups rise from 0; momentum rises from `warmup_momentum`.
    """
    target = config.lr0 * cosine_factor(config, epochs)(epoch)
    for group in optimizer.param_groups:
        lr = target
        if iteration < warmup_iterations:
            start = config.warmup_bias_lr if group.get("kind") == "bias" else 0.0
            lr = float(np.interp(iteration, [0, warmup_iterations], [start, target]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(iteration, [0, warmup_iterations],
                                                    [config.warmup_momentum, config.momentum]))
        elif "momentum" in group:
            group["momentum"] = config.momentum
        group["lr"] = lr
