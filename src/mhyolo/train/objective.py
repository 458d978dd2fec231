"""What the trainer minimises: the detection loss plus the type heads' losses.

Phase 2 (`freeze="detector"`) trains only the type heads: the detector's weights
get no gradient, its BatchNorm layers stay in eval mode and the EMA copies them
unchanged, so the detector is bit-identical afterwards. Joint training adds
`type_weight` x type loss to the detection loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mhyolo.model.yolo import YoloModel, is_head
from mhyolo.train.loss import DetectionLoss, LossConfig
from mhyolo.train.type_loss import ImageTypeLoss, ObjectTypeLoss

TYPE_OUTPUTS = ("type", "image_type")


@dataclass
class ObjectiveConfig:
    type_weight: float = 1.0  # lambda in loss = detection + lambda * type (joint training)
    type_label_smoothing: float = 0.0


def detector_modules(model: YoloModel) -> Iterator[nn.Module]:
    """Every row that is not a type head: backbone, neck and Detect."""
    for module in model.model:
        if not (is_head(module) and module.output_name in TYPE_OUTPUTS):
            yield module


def freeze_detector(model: YoloModel) -> set[str]:
    """Stop gradients into the detector; returns the state_dict names that must not change."""
    frozen: set[str] = set()
    detector = set(map(id, detector_modules(model)))
    for index, module in enumerate(model.model):
        if id(module) not in detector:
            continue
        for name, param in module.named_parameters():
            param.requires_grad_(False)
        frozen.update(f"model.{index}.{name}" for name in module.state_dict())
    return frozen


def freeze_rows(model: YoloModel, count: int) -> set[str]:
    """Stop gradients into the first `count` rows (YOLOv5's `--freeze N`: the early backbone keeps
    the COCO features); returns the state_dict names that must not change."""
    frozen: set[str] = set()
    for index, module in enumerate(model.model[:count]):
        for param in module.parameters():
            param.requires_grad_(False)
        frozen.update(f"model.{index}.{name}" for name in module.state_dict())
    return frozen


def hold_frozen_in_eval(model: YoloModel, frozen: set[str]) -> None:
    """After `model.train()`: frozen rows keep eval mode so BatchNorm statistics do not move."""
    if not frozen:
        return
    for index, module in enumerate(model.model):
        if any(name.startswith(f"model.{index}.") for name in frozen):
            module.eval()


class TrainingObjective(nn.Module):
    def __init__(self, model: YoloModel, loss: LossConfig, imgsz: int, config: ObjectiveConfig | None = None,
                 detector_frozen: bool = False) -> None:
        super().__init__()
        self.config = config or ObjectiveConfig()
        self.detector_frozen = detector_frozen
        self.detection = DetectionLoss(model.detect.anchors, model.detect.nc, loss, imgsz)
        heads = model.heads
        self.object_type = ObjectTypeLoss(self.config.type_label_smoothing) if "type" in heads else None
        self.image_type = ImageTypeLoss(self.config.type_label_smoothing) if "image_type" in heads else None

    @property
    def part_names(self) -> tuple[str, ...]:
        return ("box", "obj", "cls", "type")

    def forward(self, raw: dict, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = targets.new_tensor(raw["detection"][0].shape[0])
        assigned = self.detection.assign(raw["detection"], targets)
        type_loss = torch.zeros((), device=targets.device)
        if self.object_type is not None:
            type_loss = type_loss + self.object_type(raw["type"], assigned)
        if self.image_type is not None:
            type_loss = type_loss + self.image_type(raw["image_type"], targets)
        if self.detector_frozen:
            zero = torch.zeros((), device=targets.device)
            parts = {"box": zero, "obj": zero, "cls": zero}
            total = type_loss * batch
        else:
            total, parts = self.detection(raw["detection"], targets, assigned)
            total = total + self.config.type_weight * type_loss * batch
        return total, {**parts, "type": type_loss.detach()}
