"""Which parts of a model keep their weights while the rest trains, as one spec.

Phase 2 (`detector=True`) trains only the type heads: the detector's weights get no gradient,
its BatchNorm layers stay in eval mode (their running statistics do not move) and the EMA
copies them unchanged, so the detector is bit-identical afterwards. `rows=N` is YOLOv5's
`--freeze N`: the first N rows (YOLOv5n's backbone is rows 0-9) keep the COCO features.
The spec is applied once to the model; whoever puts the model in training mode calls
`hold` after it, so a frozen row never computes batch statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from mhyolo.model.yolo import YoloModel, is_head

TYPE_OUTPUTS = ("type", "image_type")


def detector_modules(model: YoloModel) -> Iterator[nn.Module]:
    """Every row that is not a type head: backbone, neck and Detect."""
    for module in model.model:
        if not (is_head(module) and module.output_name in TYPE_OUTPUTS):
            yield module


@dataclass
class FreezeSpec:
    detector: bool = False  # every row but the type heads
    rows: int = 0  # the first `rows` rows
    frozen: set[str] = field(default_factory=set, init=False)  # state_dict names that must not change

    @property
    def detector_trains(self) -> bool:
        return not self.detector

    def apply(self, model: YoloModel) -> set[str]:
        """Stop gradients into the frozen rows; returns (and keeps) the state_dict names that must not change."""
        chosen: set[int] = set()
        if self.detector:
            detector = set(map(id, detector_modules(model)))
            chosen |= {index for index, module in enumerate(model.model) if id(module) in detector}
        chosen |= set(range(min(self.rows, len(model.model))))
        for index in sorted(chosen):
            module = model.model[index]
            for param in module.parameters():
                param.requires_grad_(False)
            self.frozen.update(f"model.{index}.{name}" for name in module.state_dict())
        return self.frozen

    def hold(self, model: YoloModel) -> None:
        """After `model.train()`: frozen rows keep eval mode so BatchNorm statistics do not move."""
        if not self.frozen:
            return
        for index, module in enumerate(model.model):
            if any(name.startswith(f"model.{index}.") for name in self.frozen):
                module.eval()
