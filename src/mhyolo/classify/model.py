"""Crop classifiers: a timm network (seed 002's ResNet26d) or the COCO-pretrained YOLOv5n backbone.

Every classifier is a `CropClassifierNet`: the input is what the detector takes too, float RGB in
[0, 1] (B, 3, S, S), and the network's own normalisation (ImageNet mean/std for timm models, none
for the YOLOv5 backbone) is its first step, so an exported graph needs no pre-processing beyond
the crop. Architectures are registered by kind (`@register_architecture`); the one whose
`handles(name)` says yes builds the network.

ImageNet weights need the Hugging Face hub, which this project cannot assume: a timm model trains
from scratch unless `pretrained` is asked for, and then fails with one message when timm cannot
fetch them. The YOLOv5n backbone (rows 0-9 of the detector: Conv/C3 stages and SPPF) starts from
the COCO weights in `../shared/weights`, found like any other weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mhyolo.infer.crops import DEFAULT_MARGIN
from mhyolo.errors import ConfigError, WeightsError

POOLS = ("avg", "max")
YOLO_BACKBONE = "yolov5n-backbone"
YOLO_BACKBONE_ROWS = 10  # rows 0-9 of yolov5n.yaml: the backbone up to SPPF
IDENTITY_MEAN = (0.0, 0.0, 0.0)
IDENTITY_STD = (1.0, 1.0, 1.0)


@dataclass
class ClassifierSpec:
    """Everything that rebuilds a classifier and makes its crops (stored in its checkpoint)."""

    arch: str  # a timm model name (resnet26d, ...) or "yolov5n-backbone"
    names: list[str]  # the types, in label-id order
    pool: str = "avg"  # global pooling before the linear layer: avg | max
    imgsz: int = 224  # crop side in pixels
    margin: float = DEFAULT_MARGIN  # context around the box, share of its long side per side
    mean: list[float] = field(default_factory=lambda: list(IDENTITY_MEAN))  # normalisation inside the net
    std: list[float] = field(default_factory=lambda: list(IDENTITY_STD))

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if len(self.names) < 2:
            raise ConfigError(f"a crop classifier needs at least two types, got {self.names}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ConfigError(f"crop size must be a multiple of 32 of at least 32, got {self.imgsz}")
        if not 0.0 <= self.margin <= 2.0:
            raise ConfigError(f"crop margin must be in [0, 2] (share of the box's long side), got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CropClassifierNet(nn.Module):
    """Normalise, then the body: (B, 3, S, S) float RGB in [0, 1] -> type logits (B, K).

    With `frozen_norm` (a pretrained body) BatchNorm layers keep their pretrained statistics while
    training (their scale and shift still learn): on a few hundred crops a handful of steps moves
    the weights far more than the slow running averages follow, and the network then scores well
    in training mode and near chance in eval mode (measured: 100 % against 53 % on the train crops).
    """

    def __init__(self, body: nn.Module, mean: Sequence[float], std: Sequence[float],
                 frozen_norm: bool = False) -> None:
        super().__init__()
        self.body = body
        self.frozen_norm = frozen_norm
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def train(self, mode: bool = True) -> CropClassifierNet:
        super().train(mode)
        if mode and self.frozen_norm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


class Architecture(ABC):
    """One kind of classifier body; registered with `register_architecture`."""

    key: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def handles(cls, name: str) -> bool:
        """Whether `name` (the `--model` value) is built by this kind."""

    @classmethod
    @abstractmethod
    def build(cls, spec: ClassifierSpec, pretrained: bool) -> tuple[nn.Module, list[float], list[float]]:
        """The body and the mean/std its input is normalised with."""


ARCHITECTURES: dict[str, type[Architecture]] = {}


def register_architecture(cls: type[Architecture]) -> type[Architecture]:
    ARCHITECTURES[cls.key] = cls
    return cls


@register_architecture
class YoloBackbone(Architecture):
    """YOLOv5n rows 0-9 (to SPPF, 256 channels at stride 32), global pooling, one linear layer."""

    key = YOLO_BACKBONE

    @classmethod
    def handles(cls, name: str) -> bool:
        return name == YOLO_BACKBONE

    @classmethod
    def build(cls, spec: ClassifierSpec, pretrained: bool) -> tuple[nn.Module, list[float], list[float]]:
        from mhyolo.model.yolo import YoloModel

        detector = YoloModel("yolov5n", nc=1)
        backbone = nn.Sequential(*list(detector.model)[:YOLO_BACKBONE_ROWS])
        if pretrained:
            _load_coco_backbone(backbone)
        channels = backbone[-1].cv2.conv.out_channels
        pool = nn.AdaptiveAvgPool2d(1) if spec.pool == "avg" else nn.AdaptiveMaxPool2d(1)
        body = nn.Sequential(backbone, pool, nn.Flatten(1), nn.Linear(channels, len(spec.names)))
        return body, list(IDENTITY_MEAN), list(IDENTITY_STD)


def _load_coco_backbone(backbone: nn.Sequential, weights: str = "yolov5n.pt") -> None:
    """Copy rows 0-9 of the official COCO weights into `backbone` (every tensor must fit)."""
    from mhyolo.model.weights import import_official, resolve_weights

    official = import_official(resolve_weights(weights)).state_dict
    prefix_rows = tuple(f"model.{i}." for i in range(YOLO_BACKBONE_ROWS))
    state = {key[len("model."):]: value for key, value in official.items() if key.startswith(prefix_rows)}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: its backbone rows do not fit YOLOv5n's: {exc}") from exc


@register_architecture
class TimmNetwork(Architecture):
    """Any image classifier timm knows by name, with its `global_pool` set as asked."""

    key = "timm"

    @classmethod
    def handles(cls, name: str) -> bool:
        timm = _timm()
        return bool(timm.list_models(name))

    @classmethod
    def build(cls, spec: ClassifierSpec, pretrained: bool) -> tuple[nn.Module, list[float], list[float]]:
        timm = _timm()
        try:
            body = timm.create_model(spec.arch, pretrained=pretrained, num_classes=len(spec.names),
                                     global_pool=spec.pool)
        except Exception as exc:  # noqa: BLE001 - hub, network and file errors all mean: no weights here
            if not pretrained:
                raise
            raise WeightsError(f"--pretrained: timm cannot get the ImageNet weights of {spec.arch} on this machine "
                               f"({type(exc).__name__}); train from scratch (leave out --pretrained), or fetch "
                               "them into the Hugging Face cache on a machine with internet access") from None
        config = getattr(body, "pretrained_cfg", None) or {}
        return body, list(config.get("mean", IDENTITY_MEAN)), list(config.get("std", IDENTITY_STD))


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise ConfigError("timm classifiers need the 'timm' package (pip install timm)") from exc
    return timm


def architecture_for(name: str) -> type[Architecture]:
    """The registered kind that builds `name` (the YOLOv5 backbone first, then timm's catalogue)."""
    for cls in ARCHITECTURES.values():
        if cls.handles(name):
            return cls
    raise ConfigError(f"unknown classifier model {name!r}: use {YOLO_BACKBONE} or a timm model name "
                      "(e.g. resnet26d; `python -c \"import timm; print(timm.list_models())\"` lists them)")


def build_classifier(spec: ClassifierSpec, pretrained: bool = False) -> CropClassifierNet:
    """The network `spec` describes (pretrained: its BatchNorm statistics are kept while it trains);
    `spec.mean`/`spec.std` are set to the ones it normalises with."""
    body, mean, std = architecture_for(spec.arch).build(spec, pretrained)
    spec.mean, spec.std = [float(v) for v in mean], [float(v) for v in std]
    return CropClassifierNet(body, spec.mean, spec.std, frozen_norm=pretrained)
