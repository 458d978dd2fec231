"""YOLOv5 built from a YAML description: backbone and head rows, then output heads.

`YoloModel.forward` returns the raw outputs of every head by name (for losses);
`YoloModel.predict` returns what post-processing consumes. Heads are rows like any
other, so a model file can declare more of them (a type head reading P3/P4/P5)
without touching the detector rows, whose indices the official weights depend on.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mhyolo.config import read_yaml
from mhyolo.defaults import path_or_shipped
from mhyolo.errors import ConfigError
from mhyolo.model.heads import DetectionHead
from mhyolo.model.layers import DEFAULT_ACT, Conv, check_activation
from mhyolo.model.registry import Row, build_layer

STRIDE_PROBE_SIZE = 256


def is_head(module: nn.Module) -> bool:
    return isinstance(getattr(module, "output_name", None), str)


def builtin_configs() -> list[str]:
    """Names of the architectures shipped in the package (`yolov5n`, `yolov5n-typehead`, ...)."""
    return sorted(path.stem for path in Path(str(resources.files("mhyolo.model") / "cfg")).glob("*.yaml"))


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped in the package (`yolov5n` or `yolov5n.yaml`)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    return Path(str(resources.files("mhyolo.model") / "cfg" / f"{stem}.yaml"))


def load_model_config(cfg: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A config dict from a dict, a YAML path, or the name of a shipped config."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    shipped = {name: builtin_config_path(name) for name in builtin_configs()}
    return read_yaml(path_or_shipped(cfg, shipped, "model config"))


def config_activation(cfg: dict[str, Any]) -> str:
    """The activation a model config asks for (silu when it says nothing)."""
    return check_activation(cfg.get("act", DEFAULT_ACT), "model config: act")


def _substitute(value: Any, symbols: dict[str, Any]) -> Any:
    """Replace symbolic arguments (`nc`, `anchors`, `None`) by their values; nothing is evaluated."""
    if isinstance(value, str):
        if value in symbols:
            return symbols[value]
        if value == "None":
            return None
    if isinstance(value, list):
        return [_substitute(v, symbols) for v in value]
    return value


def parse_rows(cfg: dict[str, Any], in_channels: int = 3) -> tuple[nn.Sequential, list[int]]:
    """Build every row in order; returns the layers and the indices whose outputs are reused.
    The file's `act` (default silu) is handed to every row's builder, backbone to heads."""
    for key in ("depth_multiple", "width_multiple", "backbone", "head"):
        if key not in cfg:
            raise ConfigError(f"model config: missing '{key}'")
    act = config_activation(cfg)
    symbols = {k: v for k, v in cfg.items() if k not in ("backbone", "head", "heads", "act")}
    rows = list(cfg["backbone"]) + list(cfg["head"]) + list(cfg.get("heads") or [])
    channels = [in_channels]
    layers: list[nn.Module] = []
    reused: set[int] = set()
    for index, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4):
            raise ConfigError(f"model config row {index}: expected [from, repeats, module, args], got {row!r}")
        source, repeats, name, args = row
        resolved = Row(index=index, source=source, repeats=int(repeats), name=str(name),
                       args=_substitute(list(args or []), symbols),
                       depth_multiple=float(cfg["depth_multiple"]), width_multiple=float(cfg["width_multiple"]),
                       act=act)
        sources = source if isinstance(source, list) else [source]
        for s in sources:
            if not isinstance(s, int) or s >= index or (s < -1 and index + s < 0):
                raise ConfigError(f"model config row {index}: 'from' {source!r} must name earlier layers")
            if s == -1 and layers and is_head(layers[-1]):
                raise ConfigError(f"model config row {index}: reads the output of head row {index - 1}; name the feature layers")
        module, c2 = build_layer(resolved, channels)
        module.f, module.i, module.type = source, index, name  # plain attributes, not in the state_dict
        reused.update(s if s >= 0 else index + s for s in sources if s != -1)
        layers.append(module)
        channels.append(c2)
    return nn.Sequential(*layers), sorted(reused)


class YoloModel(nn.Module):
    """A YOLOv5 network plus any extra heads declared in its config.

    `act` replaces the config's activation (`act:`, silu when absent) for every convolution;
    it is written into `yaml`, so a checkpoint rebuilds the model it was trained as."""

    def __init__(self, cfg: str | Path | dict[str, Any], nc: int | None = None, names: Sequence[str] | None = None,
                 in_channels: int = 3, trained_imgsz: int | None = None, act: str | None = None) -> None:
        super().__init__()
        # the input size the model was trained at: what val/predict/benchmark use unless told otherwise
        self.trained_imgsz = trained_imgsz
        self.yaml = load_model_config(cfg)
        if nc is not None:
            self.yaml["nc"] = int(nc)
        if act is not None:
            self.yaml["act"] = check_activation(act)
        self.model, self.save = parse_rows(self.yaml, in_channels)
        self.names: list[str] = list(names) if names else [str(i) for i in range(int(self.yaml["nc"]))]
        if len(self.names) != self.detect.nc:
            raise ConfigError(f"{len(self.names)} class names for a detector with nc={self.detect.nc}")
        self.type_names: list[str] | None = self.yaml.get("type_names")
        self._init_strides(in_channels)
        self.detect.initialize_biases()

    # ----------------------------------------------------------------- structure
    @property
    def heads(self) -> dict[str, nn.Module]:
        return {m.output_name: m for m in self.model if is_head(m)}

    @property
    def detect(self) -> DetectionHead:
        """The detection head: `Detect`, or another `DetectionHead` such as `DecoupledDetect`."""
        head = self.heads.get("detection")
        if not isinstance(head, DetectionHead):
            raise ConfigError("model config has no detection head")
        return head

    @property
    def stride(self) -> torch.Tensor:
        return self.detect.stride

    @property
    def act(self) -> str:
        """The activation of every convolution (`act:` of the config)."""
        return config_activation(self.yaml)

    @torch.no_grad()
    def _init_strides(self, in_channels: int) -> None:
        was_training = self.training
        self.eval()
        probe = torch.zeros(1, in_channels, STRIDE_PROBE_SIZE, STRIDE_PROBE_SIZE)
        raw = self.forward(probe)["detection"]
        self.detect.set_strides(torch.tensor([STRIDE_PROBE_SIZE / r.shape[2] for r in raw], dtype=torch.float32))
        self.train(was_training)

    # ------------------------------------------------------------------- running
    def _run(self, x: torch.Tensor, capture: Sequence[int] = ()) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
        saved: dict[int, torch.Tensor] = {}
        outputs: dict[str, Any] = {}
        captured: dict[int, torch.Tensor] = {}
        keep = set(self.save) | set(capture)
        for module in self.model:
            if module.f != -1:
                x = saved[module.f] if isinstance(module.f, int) else [x if j == -1 else saved[j] for j in module.f]
            if is_head(module):
                outputs[module.output_name] = module(x)
                continue
            x = module(x)
            if module.i in keep:
                saved[module.i] = x
                if module.i in capture:
                    captured[module.i] = x
        return outputs, captured

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """Raw outputs of every head, keyed by output name (training losses consume these)."""
        return self._run(x)[0]

    def forward_with_features(self, x: torch.Tensor, layers: Sequence[int]) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
        """Raw outputs plus the feature maps of `layers` (e.g. for feature distillation)."""
        return self._run(x, layers)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference outputs of every head (decoded detections, probabilities)."""
        raw = self.forward(x)
        return {name: self.heads[name].inference(value) for name, value in raw.items()}

    @torch.no_grad()
    def fuse(self) -> YoloModel:
        """Fold BatchNorm into convolutions for faster inference (eval only)."""
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self

    @torch.no_grad()
    def for_inference(self) -> YoloModel:
        """The form a model that is only run takes: eval mode, BatchNorm folded, weights channels-last
        (oneDNN's preferred layout on the CPU: the yolov5n forward at 640 ran x1.38 faster on an AMD
        EPYC, outputs within 2e-5). Never for a model that trains further."""
        self.eval().fuse()
        return self.to(memory_format=torch.channels_last)

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint must carry to rebuild this model."""
        return {"config": self.yaml, "names": self.names, "type_names": self.type_names,
                "strides": self.stride.tolist(), "anchors_px": self.detect.anchors_px.tolist()}


def detector_part(model: YoloModel) -> YoloModel:
    """The same network without its extra heads: the detector a multi-head model carries.

    Head rows come after the detector rows, so every detector tensor keeps its name and
    is copied as is; detections are identical to the full model's. Used to measure what
    the heads cost against exactly the detector they sit on.
    """
    cfg = {key: value for key, value in copy.deepcopy(model.yaml).items() if key not in ("heads", "type_names", "ntypes")}
    detector = YoloModel(cfg, names=model.names)
    own = detector.state_dict()
    detector.load_state_dict({name: value for name, value in model.state_dict().items() if name in own}, strict=True)
    return detector.train(model.training)


def build_model(cfg: str | Path | dict[str, Any] = "yolov5n", nc: int | None = None,
                names: Sequence[str] | None = None, act: str | None = None) -> YoloModel:
    return YoloModel(cfg, nc=nc, names=names, act=act)
