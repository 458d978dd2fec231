"""Training settings: one dataclass tree, loaded from YAML (the shipped `hyp`, `head`, `joint`, `multihead` or a file) and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from mhyolo.data.augment import AugmentConfig
from mhyolo.defaults import DEFAULT_IMGSZ
from mhyolo.errors import ConfigError
from mhyolo.model.layers import check_activation
from mhyolo.train.loss import LossConfig
from mhyolo.train.objective import ObjectiveConfig


@dataclass
class OptimConfig:
    """SGD with YOLOv5's schedule: linear warm-up, then cosine decay from lr0 to lr0*lrf."""

    optimizer: str = "SGD"  # SGD | Adam | AdamW
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    nominal_batch: int = 64  # gradients are accumulated up to this many images per step

    def __post_init__(self) -> None:
        if self.optimizer not in ("SGD", "Adam", "AdamW"):
            raise ConfigError(f"optim.optimizer: expected SGD, Adam or AdamW, got {self.optimizer!r}")


@dataclass
class TrainConfig:
    data: str = ""
    weights: str | None = "yolov5n.pt"  # official .pt, our .safetensors, or None for scratch
    model: str | None = "yolov5n"  # architecture config (shipped name or YAML path); null: the weights' own
    # activation of every convolution, replacing the architecture's `act:` (silu, relu, leakyrelu); null: as it says
    act: str | None = None
    epochs: int = 100
    imgsz: int = DEFAULT_IMGSZ
    batch: int = 16
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    single_class: bool = True  # detector sees one class ("ball"); False: the label ids are detection classes
    close_mosaic: int = 10  # last epochs trained without mosaic
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    val_every: int = 1
    val_conf: float = 0.001
    val_iou: float = 0.6
    val_max_det: int = 300
    patience: int = 0  # stop after this many epochs without improvement (0: never)
    freeze: str | None = None  # "detector": train only the type heads (phase 2)
    freeze_layers: int = 0  # the first N rows keep their pretrained weights (YOLOv5n's backbone is rows 0-9)
    # a class of the pretrained detector the new classes start from (COCO 32: "sports ball"); null: none
    class_init: int | None = None
    # each batch resized to a random multiple of the stride in [low, high] x imgsz; null: off
    multi_scale: list[float] | None = None
    # distillation: a trained model (any mhyolo checkpoint or YOLOv5 .pt) the terms under objective.terms
    # (imitation, response_kd) learn from; frozen, in eval mode, on the same batches
    teacher: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.act is not None:
            check_activation(self.act)
        if self.imgsz % 32:
            raise ConfigError(f"imgsz must be a multiple of 32, got {self.imgsz}")
        if self.freeze not in (None, "detector"):
            raise ConfigError(f"freeze: only 'detector' can be frozen, got {self.freeze!r}")
        if self.freeze_layers < 0:
            raise ConfigError(f"freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.multi_scale is not None and len(self.multi_scale) != 2:
            raise ConfigError(f"multi_scale: expected [low, high] (e.g. [0.5, 1.5]), got {self.multi_scale!r}")
        if self.epochs < 1 or self.batch < 1:
            raise ConfigError("epochs and batch must be at least 1")
