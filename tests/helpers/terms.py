"""A small registered loss term with a layer of its own, for testing the loss-term seam: it reads
the P3 feature map (row 17) through a 1x1 adapter and penalises its mean square, so it has a
parameter outside the student, reads a captured feature, and sends gradient into both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from mhyolo.config import from_dict
from mhyolo.train.terms import TERMS, BuildContext, LossTerm, Step, TermResult, register_term

NAME = "feature_l2"
P3_ROW, P3_CHANNELS = 17, 64  # yolov5n


@dataclass
class FeatureL2Settings:
    weight: float = 0.01
    row: int = P3_ROW


class FeatureL2(LossTerm):
    columns = ("feat",)

    def __init__(self, settings: FeatureL2Settings, channels: int) -> None:
        super().__init__(settings.weight)
        self.feature_rows = (settings.row,)
        self.adapter = nn.Conv2d(channels, channels, 1)

    def compute(self, step: Step) -> TermResult:
        value = self.adapter(step.features[self.feature_rows[0]]).pow(2).mean()
        return TermResult(self.weight * value * step.batch, {"feat": value.detach()})


def build(context: BuildContext, options: dict[str, Any]) -> FeatureL2:
    return FeatureL2(from_dict(FeatureL2Settings, options, f"objective.terms.{NAME}"), P3_CHANNELS)


if NAME not in TERMS:  # imported by the tests and by the DDP worker
    register_term(NAME)(build)
