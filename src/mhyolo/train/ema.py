"""Exponential moving average of the weights, as YOLOv5 keeps it.

The decay ramps up from 0 (`decay * (1 - exp(-updates / tau))`), so the average
follows the model closely at first and smooths it later; the EMA is what gets
validated and shipped.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0,
                 copy_only: set[str] | None = None) -> None:
        """`copy_only`: state_dict names copied as they are (frozen weights stay bit-identical)."""
        self.module = copy.deepcopy(model).eval()
        self.copy_only = copy_only or set()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point and name not in self.copy_only:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])
