"""What an exported graph outputs, the metadata that travels with it, and how its
outputs are read back into the `InferenceBackend` dict.

Layout (every tensor NCHW, one per level ``pN`` where N = log2(stride)):

* ``boxes_pN``  (B, na*4, H, W): sigmoid of the box logits; channel ``a*4 + j`` is
  coordinate j (x, y, w, h offsets) of anchor a.
* ``scores_pN`` (B, na*(1+nc), H, W): sigmoid of objectness and class logits; channel
  ``a*(1+nc)`` is anchor a's objectness, ``a*(1+nc) + 1 + c`` its class c.
* ``types_pN``  (B, na*T, H, W): per-object type logits, channel ``a*T + t``, when
  the model has an `ObjectTypeHead`; `reconstruct` takes the softmax over each
  anchor's T channels (in the graph that softmax cost more than the head's convs).
* ``image_type`` (B, T): image type probabilities, when it has an `ImageTypeHead`.
* ``prototypes`` (B, nm, H/4, W/4) and ``masks_pN`` (B, na*nm, H, W): prototype masks and per-row mask
  coefficients (channel ``a*nm + k``), when it has a `MaskHead` (`mask_output`); masks are assembled
  after post-processing (`infer.masks`), for the kept boxes only.

Boxes and scores are separate tensors because their ranges differ by orders of
magnitude, which per-tensor INT8 quantisation cannot represent in one tensor; no box
decoding happens in the graph: `reconstruct` decodes in NumPy (`infer.levels`) with the float32
operations of the PyTorch model's `decode_levels`, and every runtime is post-processed alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mhyolo.errors import WeightsError
from mhyolo.infer.arrays import as_numpy
from mhyolo.infer.preprocess import MODEL_INPUTS, FloatRgbNchw, Uint8BgrNhwc
from mhyolo.version import __version__

if TYPE_CHECKING:
    from mhyolo.infer.levels import LevelOutputs

METADATA_KEY = "mhyolo"
LAYOUT_VERSION = 2  # 2: types_pN are logits (1: per-anchor softmax in the graph)
INPUT_NAME = "images"
FLOAT_RGB_NCHW = FloatRgbNchw.key  # (B, 3, H, W) float RGB in [0, 1]: every exported graph by default
UINT8_BGR_NHWC = Uint8BgrNhwc.key  # (B, H, W, 3) uint8 BGR, the letterbox itself: an OpenVINO IR option
BOX_OUTPUT_PREFIX = "boxes_"  # boxes_p3, boxes_p4...: the outputs whose logits need resolution
LAYOUT_DESCRIPTION = (
    "boxes_pN (B,na*4,H,W) sigmoid xywh offsets, channel a*4+j; scores_pN (B,na*(1+nc),H,W) sigmoid "
    "[obj, cls...], channel a*(1+nc)+k; types_pN (B,na*T,H,W) logits, softmax per anchor, channel a*T+t; "
    "image_type (B,T) softmax; decode with mhyolo.model.heads.decode_levels")


def level_name(stride: float) -> str:
    """`p3` for stride 8, `p4` for 16...: the usual name of a pyramid level."""
    return f"p{int(round(math.log2(stride)))}"


@dataclass
class ExportMetadata:
    """Everything needed to turn the graph's outputs into decoded predictions."""

    names: list[str]
    strides: list[float]
    anchors_px: list[list[list[float]]]  # (levels, na, 2) in input pixels
    imgsz: int
    type_names: list[str] | None = None
    type_output: str | None = None  # "type" (per object), "image_type" (per image) or None
    dynamic_batch: bool = False
    mask_output: bool = False  # prototypes + masks_pN outputs (a `MaskHead`)
    mask_stride: int = 4  # input pixels per prototype pixel
    input_name: str = INPUT_NAME
    input_format: str = "float32 RGB NCHW in [0, 1], letterboxed with grey 114"
    input_kind: str = FLOAT_RGB_NCHW  # what `infer.preprocess.model_input` feeds (absent before: float)
    layout: str = LAYOUT_DESCRIPTION
    layout_version: int = LAYOUT_VERSION
    mhyolo_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def na(self) -> int:
        return len(self.anchors_px[0])

    @property
    def levels(self) -> list[str]:
        return [level_name(s) for s in self.strides]

    @property
    def output_names(self) -> list[str]:
        """Graph outputs in order: boxes/scores per level, then type outputs, then mask outputs."""
        names = [f"{kind}_{level}" for level in self.levels for kind in ("boxes", "scores")]
        if self.type_output == "type":
            names += [f"types_{level}" for level in self.levels]
        elif self.type_output == "image_type":
            names.append("image_type")
        if self.mask_output:
            names += ["prototypes"] + [f"masks_{level}" for level in self.levels]
        return names

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ExportMetadata:
        """Parse stored metadata; `source` names the file in the error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{source}: corrupt '{METADATA_KEY}' metadata: {exc}") from exc
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: '{METADATA_KEY}' metadata is not a JSON object")
        version = data.get("layout_version")
        if version != LAYOUT_VERSION:
            raise WeightsError(f"{source}: output layout version {version!r}, this mhyolo reads {LAYOUT_VERSION}: "
                               "export it again with `mhyolo export`")
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("names", "strides", "anchors_px", "imgsz") if k not in data]
        if missing:
            raise WeightsError(f"{source}: '{METADATA_KEY}' metadata lacks {', '.join(missing)}")
        kind = data.get("input_kind", FLOAT_RGB_NCHW)
        if kind not in MODEL_INPUTS:
            raise WeightsError(f"{source}: input kind {kind!r} unknown to this mhyolo (it reads "
                               f"{', '.join(MODEL_INPUTS)})")
        return cls(**{k: v for k, v in data.items() if k in known})


def reconstruct(outputs: Mapping[str, Any], meta: ExportMetadata) -> dict[str, np.ndarray]:
    """Named graph outputs (arrays or tensors) -> what `YoloModel.predict` returns, as float32 arrays:
    ``"detection"`` (B, N, 5+nc) decoded rows, plus ``"type"`` (B, N, T) or
    ``"image_type"`` (B, T) probabilities. Shared by every non-PyTorch runtime; every row decoded
    (`graph_levels` is the cheap read)."""
    return dict(graph_levels(outputs, meta))


def graph_levels(outputs: Mapping[str, Any], meta: ExportMetadata) -> LevelOutputs:
    """Named graph outputs (arrays, or tensors read back) as `LevelOutputs`: per-anchor views, nothing decoded or copied;
    the cheap read of `reconstruct`'s result (`mhyolo.infer.levels`)."""
    from mhyolo.infer.levels import LevelOutputs, per_anchor

    levels, na = meta.levels, meta.na
    try:
        boxes = [per_anchor(as_numpy(outputs[f"boxes_{level}"]), na) for level in levels]
        scores = [per_anchor(as_numpy(outputs[f"scores_{level}"]), na) for level in levels]
        types = [per_anchor(as_numpy(outputs[f"types_{level}"]), na) for level in levels] \
            if meta.type_output == "type" else None
        image_type = as_numpy(outputs["image_type"]) if meta.type_output == "image_type" else None
        prototypes = as_numpy(outputs["prototypes"]) if meta.mask_output else None
        coefficients = [per_anchor(as_numpy(outputs[f"masks_{level}"]), na) for level in levels] \
            if meta.mask_output else None
    except KeyError:
        missing = [name for name in meta.output_names if name not in outputs]
        raise WeightsError(f"the runtime returned no {', '.join(missing)} (got {', '.join(outputs)})") from None
    return LevelOutputs(boxes=boxes, scores=scores, anchors_px=np.asarray(meta.anchors_px, np.float32),
                        strides=meta.strides, types=types, image_type=image_type, coefficients=coefficients,
                        prototypes=prototypes, mask_stride=meta.mask_stride)


def graph_outputs_as_dict(values: Sequence[Any], meta: ExportMetadata) -> dict[str, Any]:
    """Pair the graph's ordered outputs with their names."""
    names = meta.output_names
    if len(values) != len(names):
        raise WeightsError(f"expected {len(names)} outputs ({', '.join(names)}), got {len(values)}")
    return dict(zip(names, values))
