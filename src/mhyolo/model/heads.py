"""Output heads. Every head has an `output_name` (the key of its output in the model's
result dict), `forward(features)` returning raw training outputs, and
`inference(raw)` turning those into what post-processing consumes.

Keeping both as explicit methods (instead of a `training`/`export` flag flipped
from outside) means the return type of a call never depends on hidden state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def decode_levels(probs: Sequence[torch.Tensor], anchors_px: torch.Tensor, strides: Sequence[float]) -> torch.Tensor:
    """Turn per-level sigmoid outputs (B, na, H, W, no) into rows (B, N, no) of
    [cx, cy, w, h] in input pixels followed by the remaining probabilities.

    This is the single box decoder: the PyTorch model and every exported runtime
    (whose graphs stop at the sigmoid) call it, so all of them score alike.
    """
    rows = []
    for level, p in enumerate(probs):
        batch, na, height, width, no = p.shape
        stride = float(strides[level])
        ys, xs = torch.meshgrid(torch.arange(height, device=p.device, dtype=p.dtype),
                                torch.arange(width, device=p.device, dtype=p.dtype), indexing="ij")
        grid = torch.stack((xs, ys), dim=-1).view(1, 1, height, width, 2)
        anchor = anchors_px[level].to(p.dtype).view(1, na, 1, 1, 2)
        xy = (p[..., 0:2] * 2.0 - 0.5 + grid) * stride
        wh = (p[..., 2:4] * 2.0) ** 2 * anchor
        rows.append(torch.cat((xy, wh, p[..., 4:]), dim=-1).reshape(batch, -1, no))
    return torch.cat(rows, dim=1)


def per_anchor(y: torch.Tensor, na: int) -> torch.Tensor:
    """A 1x1-conv output (B, na*k, H, W) as (B, na, H, W, k): one row of k values per anchor and cell.

    Every per-anchor head uses this layout, so its rows line up with the detection rows."""
    batch, channels, height, width = y.shape
    return y.view(batch, na, channels // na, height, width).permute(0, 1, 3, 4, 2).contiguous()


class DetectionHead(nn.Module):
    """What every anchor-based detection head shares, whatever its layers: the anchors and
    strides, the raw layout (B, na, H, W, 5 + nc) of [x, y, w, h, obj, cls...] logits per
    level, and the decoding. The loss, NMS, validation and every exported runtime read only
    this, so a head with other layers (`decoupled.DecoupledDetect`) works with all of them.

    Subclasses build their layers and implement `forward` and `initialize_biases`."""

    output_name = "detection"

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        # Anchors are given in pixels; `set_strides` converts them to grid units, the
        # unit the official checkpoints store in this buffer.
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)

    def set_strides(self, strides: torch.Tensor) -> None:
        """Record the level strides and express the anchors in grid units (done once, at build)."""
        self.stride.copy_(strides)
        self.anchors.div_(strides.view(-1, 1, 1))

    @property
    def anchors_px(self) -> torch.Tensor:
        return self.anchors * self.stride.view(-1, 1, 1)

    def objectness_prior(self, stride: float, image_size: int = 640) -> float:
        """Objectness bias for about 8 objects per `image_size` image at this stride."""
        return math.log(8 / (image_size / float(stride)) ** 2)

    def class_prior(self) -> float:
        """Class bias for scores near 0.6/nc."""
        return math.log(0.6 / (self.nc - 0.99))

    def initialize_biases(self, image_size: int = 640) -> None:
        raise NotImplementedError

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def probabilities(self, raw: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Sigmoid of every raw output: the tensors an exported graph ends with."""
        return [r.sigmoid() for r in raw]

    def inference(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded rows (B, N, 5 + nc): [cx, cy, w, h, objectness, class probabilities...]."""
        return decode_levels(self.probabilities(raw), self.anchors_px, self.stride.tolist())


class Detect(DetectionHead):
    """YOLOv5's coupled anchor-based detection head: one 1x1 conv per level predicting,
    for each of `na` anchors, box offsets, objectness and `nc` class scores."""

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int]) -> None:
        super().__init__(nc, anchors)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    @torch.no_grad()
    def initialize_biases(self, image_size: int = 640) -> None:
        """Start objectness near 8 objects per 640 image and class scores near 0.6/nc.

        With nc=1 the class column gets no loss at all, so this start (sigmoid ~0.98)
        is what it keeps: scores (objectness x class) stay essentially objectness."""
        for conv, stride in zip(self.m, self.stride):
            bias = conv.bias.view(self.na, -1)
            bias[:, 4] += self.objectness_prior(float(stride), image_size)
            bias[:, 5:5 + self.nc] += self.class_prior()

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Raw logits per level, shaped (B, na, H, W, no): what the loss consumes."""
        return [per_anchor(conv(x), self.na) for conv, x in zip(self.m, features)]
