"""The one module that trains: the student plus whatever the loss terms own.

The optimizer, DistributedDataParallel, gradient clipping and the `last` checkpoint see this
module, so a term's own layers (a distillation adapter) learn with the student and their
gradients are reduced across ranks. Its forward runs the student, captures the feature maps
the terms asked for *inside* the wrapped call (a hook outside DDP's forward would miss the
reduction), and returns the loss. The EMA, `best` and every export hold the student alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mhyolo.model.freezing import FreezeSpec
from mhyolo.model.yolo import YoloModel
from mhyolo.train.objective import TrainingObjective


class TrainingModule(nn.Module):
    def __init__(self, student: YoloModel, objective: TrainingObjective, freeze: FreezeSpec | None = None) -> None:
        super().__init__()
        self.student = student
        self.objective = objective
        self.freeze = freeze or FreezeSpec()

    def train(self, mode: bool = True) -> TrainingModule:
        """Training mode everywhere except the frozen rows (their BatchNorm statistics stay put)."""
        super().train(mode)
        if mode:
            self.freeze.hold(self.student)
        return self

    def forward(self, images: torch.Tensor, targets: torch.Tensor,
                ignore: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`ignore`: the batch's ignore regions (`data.dataset.Batch.ignore`), None without any."""
        raw, features = self.student.forward_with_features(images, self.objective.feature_rows)
        return self.objective(raw, targets, features, images, ignore)

    def term_state(self) -> dict[str, Any]:
        """The terms' own tensors (adapters; buffers such as anchors too): saved in `last` for resume,
        never in `best` or an export."""
        return self.objective.state_dict()
