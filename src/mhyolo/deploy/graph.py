"""The module that gets exported: a `YoloModel` whose heads end in the NPU-friendly
layout of `mhyolo.infer.layout` (separate box and score tensors, activations inside,
no decoding).

The detection conv of each level is split into a box conv and a score conv with the
very same weights, so each output is a plain Conv -> Sigmoid on 4-D tensors: no
slicing of a mixed tensor, no 5-D reshape for an NPU compiler to trip on. The decoupled
head already has separate box, objectness and class convs; its scores are the objectness
and class channels of each anchor side by side (channel slices and one concat, all 4-D).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mhyolo.defaults import check_stride_multiple
from mhyolo.infer.layout import ExportMetadata
from mhyolo.errors import ConfigError
from mhyolo.model.decoupled import DecoupledDetect
from mhyolo.model.heads import Detect, DetectionHead
from mhyolo.model.mask_head import MaskHead
from mhyolo.model.type_heads import ImageTypeHead, ObjectTypeHead
from mhyolo.model.yolo import YoloModel, is_head


def _conv_rows(conv: nn.Conv2d, rows: list[int]) -> nn.Conv2d:
    """A 1x1 conv computing only output channels `rows` of `conv`."""
    out = nn.Conv2d(conv.in_channels, len(rows), conv.kernel_size, conv.stride, conv.padding, bias=True)
    index = torch.tensor(rows)
    with torch.no_grad():
        out.weight.copy_(conv.weight[index])
        out.bias.copy_(conv.bias[index] if conv.bias is not None else torch.zeros(len(rows)))
    return out


class DetectOutputs(nn.Module):
    """Per level: boxes (B, na*4, H, W) and scores (B, na*(1+nc), H, W), both sigmoids."""

    def __init__(self, detect: Detect) -> None:
        super().__init__()
        na, no = detect.na, detect.no
        box_rows = [a * no + j for a in range(na) for j in range(4)]
        score_rows = [a * no + j for a in range(na) for j in range(4, no)]
        self.box = nn.ModuleList(_conv_rows(conv, box_rows) for conv in detect.m)
        self.score = nn.ModuleList(_conv_rows(conv, score_rows) for conv in detect.m)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for box, score, x in zip(self.box, self.score, features):
            outputs += [box(x).sigmoid(), score(x).sigmoid()]
        return outputs


class DecoupledDetectOutputs(nn.Module):
    """`DetectOutputs`'s layout from a `DecoupledDetect`: per level boxes (B, na*4, H, W)
    straight from the box conv, and scores (B, na*(1+nc), H, W) with anchor a's objectness
    at channel a*(1+nc) and its classes after it, both sigmoids."""

    def __init__(self, head: DecoupledDetect) -> None:
        super().__init__()
        self.levels = head.m
        self.na, self.nc = head.na, head.nc

    def _scores(self, obj: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        nc = self.nc
        parts = []
        for a in range(self.na):
            parts += [obj[:, a:a + 1], cls[:, a * nc:(a + 1) * nc]]
        return torch.cat(parts, dim=1)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in zip(self.levels, features):
            box, obj, cls = level.branches(x)
            outputs += [box.sigmoid(), self._scores(obj, cls).sigmoid()]
        return outputs


class ObjectTypeOutputs(nn.Module):
    """Per level: type logits (B, na*T, H, W), the head's 1x1 conv output as it is.

    The softmax over each anchor's T channels is left to `layout.reconstruct`: in the graph
    it needs a split per anchor, a softmax on a non-last axis and a concat per level, which
    cost ONNX Runtime more than the head's convolutions (x1.18 of the detector's latency
    at 320 with them); after post-processing it is a softmax over (N, T) rows."""

    def __init__(self, head: ObjectTypeHead) -> None:
        super().__init__()
        self.branches = head.m
        self.ntypes = head.ntypes

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(x) for branch, x in zip(self.branches, features)]


class ImageTypeOutputs(nn.Module):
    """One (B, T) tensor of image type probabilities."""

    def __init__(self, head: ImageTypeHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.head(features).softmax(dim=-1)]


class MaskOutputs(nn.Module):
    """The prototypes (B, nm, H/4, W/4), then per level the mask coefficients (B, na*nm, H, W) as the
    head's 1x1 convs give them."""

    def __init__(self, head: MaskHead) -> None:
        super().__init__()
        self.proto, self.branches = head.proto, head.m

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.proto(features[0])] + [branch(x) for branch, x in zip(self.branches, features)]


def _head_outputs(head: nn.Module) -> tuple[nn.Module, str | None]:
    if isinstance(head, Detect):
        return DetectOutputs(head), None
    if isinstance(head, DecoupledDetect):
        return DecoupledDetectOutputs(head), None
    if isinstance(head, ObjectTypeHead):
        return ObjectTypeOutputs(head), "type"
    if isinstance(head, ImageTypeHead):
        return ImageTypeOutputs(head), "image_type"
    if isinstance(head, MaskHead):
        return MaskOutputs(head), MaskHead.output_name
    raise ConfigError(f"no export layout for head {type(head).__name__} ('{head.output_name}')")


class ExportGraph(nn.Module):
    """`images` (B, 3, H, W) float RGB in [0, 1] -> the tuple of `metadata.output_names` tensors.

    Holds a copy of the model (fused when asked), so exporting never alters the caller's model.
    """

    def __init__(self, model: YoloModel, imgsz: int, fuse: bool = True, dynamic_batch: bool = False) -> None:
        super().__init__()
        stride = int(model.stride.max())
        check_stride_multiple(imgsz, stride, "export size")
        net = copy.deepcopy(model).cpu().float().eval()
        if fuse:
            net.fuse()
        self.layers = net.model
        self.save = set(net.save)
        self.adapters = nn.ModuleDict()
        type_output, mask_stride = None, None
        for module in self.layers:
            if is_head(module):
                adapter, kind = _head_outputs(module)
                self.adapters[str(module.i)] = adapter
                if kind == MaskHead.output_name:
                    mask_stride = int(module.proto_stride)
                else:
                    type_output = kind or type_output
        self.metadata = ExportMetadata(
            names=list(model.names), strides=[float(s) for s in model.stride.tolist()],
            anchors_px=model.detect.anchors_px.tolist(), imgsz=int(imgsz), type_names=model.type_names,
            type_output=type_output, dynamic_batch=dynamic_batch, mask_output=mask_stride is not None,
            mask_stride=mask_stride or 4)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        saved: dict[int, torch.Tensor] = {}
        detection: list[torch.Tensor] = []
        types: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        x = images
        for module in self.layers:
            inputs = x
            if module.f != -1:
                sources = module.f
                inputs = saved[sources] if isinstance(sources, int) else [x if j == -1 else saved[j] for j in sources]
            if is_head(module):
                outputs = self.adapters[str(module.i)](inputs)
                kind = (detection if isinstance(module, DetectionHead) else masks if isinstance(module, MaskHead)
                        else types)
                kind.extend(outputs)
                continue
            x = module(inputs)
            if module.i in self.save:
                saved[module.i] = x
        return tuple(detection + types + masks)

    @torch.no_grad()
    def named_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The outputs by name, as a runtime returns them (the PyTorch reference)."""
        return dict(zip(self.metadata.output_names, self.forward(images)))
