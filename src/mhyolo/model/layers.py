"""The convolutional building blocks of YOLOv5, named so official weights load as they are.

Attribute names (`conv`, `bn`, `cv1`, `m`, ...) are part of the checkpoint format:
renaming one breaks `load_state_dict(strict=True)` against the official files.

Every block takes the activation of its convolutions by name (`act`, a key of
`ACTIVATIONS`): a model file's `act:` reaches each `Conv` through the builder, so two
models with different activations can live side by side. Activations have no weights,
so the COCO (SiLU) checkpoint loads into any of them tensor for tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from mhyolo.errors import ConfigError

# The official weights were trained with these BatchNorm settings, not PyTorch's defaults.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03

DEFAULT_ACT = "silu"  # what the official YOLOv5 weights were trained with
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {}


def register_activation(name: str, factory: Callable[[], nn.Module]) -> None:
    """Make `factory` available to model files as `act: name`."""
    ACTIVATIONS[name] = factory


# SiLU is x * sigmoid(x): in a quantized graph a Sigmoid and a Mul after every Conv.
# ReLU (and LeakyReLU) fold into an INT8 convolution on NPUs and in ONNX Runtime's QDQ graphs.
register_activation("silu", nn.SiLU)
register_activation("relu", nn.ReLU)
register_activation("leakyrelu", partial(nn.LeakyReLU, 0.1))  # the slope of YOLOv3/v4 and older YOLOv5


def check_activation(name: object, where: str = "act") -> str:
    """`name` if it is a registered activation, else a ConfigError naming `where` and the choices."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConfigError(f"{where}: unknown activation {name!r} (known: {', '.join(sorted(ACTIVATIONS))})")
    return name


def activation(name: str | None) -> nn.Module:
    """A fresh activation module; None gives Identity (a conv without activation)."""
    return nn.Identity() if name is None else ACTIVATIONS[check_activation(name)]()


def autopad(kernel: int, padding: int | None = None) -> int:
    """'Same' padding for odd kernels."""
    return kernel // 2 if padding is None else padding


class Conv(nn.Module):
    """Conv2d -> BatchNorm -> activation (SiLU unless told); `fuse()` folds the BatchNorm
    into the conv for inference."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: str | None = DEFAULT_ACT) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BatchNorm into the convolution (same outputs in eval mode, one op fewer)."""
        if isinstance(self.bn, nn.Identity):
            return
        conv, bn = self.conv, self.bn
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True).to(conv.weight.device)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, nn.Identity()


class Bottleneck(nn.Module):
    """1x1 then 3x3 conv, with a residual connection when shapes allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 act: str = DEFAULT_ACT) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1, act=act)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convolutions: YOLOv5's main feature extractor."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 act: str = DEFAULT_ACT) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1, act=act)
        self.cv2 = Conv(c1, hidden, 1, 1, act=act)
        self.cv3 = Conv(2 * hidden, c2, 1, act=act)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0, act=act) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained max-pools, concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5, act: str = DEFAULT_ACT) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1, act=act)
        self.cv2 = Conv(hidden * 4, c2, 1, 1, act=act)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension (channels by default)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)
