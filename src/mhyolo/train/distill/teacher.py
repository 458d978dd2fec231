"""The teacher: any mhyolo checkpoint (or YOLOv5 `.pt`), frozen, run on the student's own batch.

Public distillation code for YOLOv5 goes wrong in the same few ways: the teacher left in train
mode (its BatchNorm statistics drift with every batch), or run with gradients. Here the teacher's
network is never registered as a submodule of what trains (so no optimizer, DDP, `.train()` or
checkpoint ever reaches it), its parameters do not require gradients, and every call puts it in
eval mode and runs under `no_grad`. It sees the same augmented (and multi-scaled) images as the
student, inside the student's forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mhyolo.errors import ConfigError, WeightsError
from mhyolo.model.yolo import YoloModel


class Teacher:
    def __init__(self, model: YoloModel, source: str = "") -> None:
        self.model = model.eval()
        self.source = source
        for param in self.model.parameters():
            param.requires_grad_(False)

    @classmethod
    def load(cls, weights: str | Path, device: str | torch.device = "cpu") -> Teacher:
        from mhyolo.model.weights import load_model, resolve_weights

        try:
            path = resolve_weights(weights, download=False)
        except WeightsError as exc:
            raise ConfigError(f"teacher: {exc}") from exc
        return cls(load_model(path, device=device), str(path))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def run(self, images: torch.Tensor, rows: Sequence[int] = ()) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
        """Raw head outputs and the feature maps of `rows`, without gradient, BatchNorm frozen."""
        self.model.eval()
        return self.model.forward_with_features(images.to(self.device), rows)

    def check_lines_up(self, student: YoloModel, anchors: bool, rows: Sequence[int] = (),
                       probe: int = 128) -> dict[int, tuple[int, int]]:
        """Fail before training when the teacher cannot teach this student: strides and number of
        levels must agree; `anchors` (response KD compares anchor by anchor) must agree too; each
        imitation row must exist in both with the same spatial size. Returns {row: (student
        channels, teacher channels)}."""
        where = f"teacher {self.source}"
        s_det, t_det = student.detect, self.model.detect
        if s_det.nl != t_det.nl or not torch.equal(s_det.stride.cpu(), t_det.stride.cpu()):
            raise ConfigError(f"{where}: strides {t_det.stride.tolist()} do not line up with the student's "
                              f"{s_det.stride.tolist()}")
        if anchors:
            if s_det.na != t_det.na or not torch.allclose(s_det.anchors_px.cpu(), t_det.anchors_px.cpu()):
                raise ConfigError(f"{where}: anchors {t_det.anchors_px.tolist()} differ from the student's "
                                  f"{s_det.anchors_px.tolist()}; response distillation compares anchor by anchor")
            if s_det.nc != t_det.nc:
                raise ConfigError(f"{where}: detects {t_det.nc} classes, the student {s_det.nc}")
        if not rows:
            return {}
        for model, name in ((student, "student"), (self.model, "teacher")):
            missing = [row for row in rows if row >= len(model.model)]
            if missing:
                raise ConfigError(f"{where}: imitation row(s) {missing} do not exist in the {name}")
        x = torch.zeros(1, 3, probe, probe)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            _, s_feats = student.forward_with_features(x.to(next(student.parameters()).device), rows)
            _, t_feats = self.run(x, rows)
        student.train(was_training)
        channels = {}
        for row in rows:
            if s_feats[row].shape[2:] != t_feats[row].shape[2:]:
                raise ConfigError(f"{where}: row {row} is {tuple(t_feats[row].shape[2:])} at {probe} px in the "
                                  f"teacher, {tuple(s_feats[row].shape[2:])} in the student")
            channels[row] = (int(s_feats[row].shape[1]), int(t_feats[row].shape[1]))
        return channels
