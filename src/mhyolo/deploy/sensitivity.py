"""Which layers of a QDQ model lose most to INT8 activations, measured on calibration images.

A few blocks of a detector carry activations whose range is set by rare outliers (in
YOLOv5n the high-resolution convs right after the stem), so an 8-bit grid over that
range leaves the common values with a handful of levels. Those blocks are found by the
signal-to-quantization-noise ratio (SQNR, dB) of each tensor before and after its own
Quantize/Dequantize pair in the quantized model, which ONNX Runtime's `qdq_loss_debug`
computes; a low ratio is local damage, independent of what earlier layers did. The
measurement uses calibration images only, never the split the model is scored on.

A *block* is the module that owns a node: `/layers.1/conv/Conv` and `/layers.1/act/Mul`
both belong to `/layers.1/`, so a Conv and its SiLU are kept in float together (a float
Conv between two quantized SiLUs would only add Quantize/Dequantize pairs).
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A threshold that picks the outlier-ranged blocks of YOLOv5n: on the ball models the two
# blocks below it are /layers.1/ and /layers.2/cv2/ (23-28 dB; at 320 the next ones measured
# 29-30 dB). Keeping them float is not the default: on the demo model at 320 it halved the mAP50
# drop on the 150 val images (0.019 -> 0.009) but changed nothing on the 594 train images
# (-0.001 either way) nor at 640, and it costs 5-7 % of the INT8 latency.
SUGGESTED_MIN_SQNR_DB = 28.0
SENSITIVITY_IMAGES = 8  # calibration images the per-block SQNR is measured on


def block_of(node_name: str) -> str:
    """`/layers.2/cv1/conv/Conv` -> `/layers.2/cv1/`: the module holding a Conv and its activation.
    Names without that depth (not from our exporter) are their own block."""
    parts = node_name.rsplit("/", 2)
    return parts[0] + "/" if len(parts) == 3 and parts[0] else node_name


@dataclass(frozen=True)
class BlockNoise:
    """The worst activation SQNR (dB) inside one block, and the tensor it was measured on."""

    block: str
    sqnr_db: float
    tensor: str


class _Batches:
    """The iterable `qdq_loss_debug.collect_activations` reads: one input dict per image."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.items = [{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches]

    def __iter__(self):
        return iter(self.items)


def block_noise(float_path: str | Path, qdq_path: str | Path, input_name: str,
                batches: Sequence[np.ndarray]) -> list[BlockNoise]:
    """Per block of the float graph at `float_path`, the lowest SQNR of the activations its
    nodes produce in the QDQ model at `qdq_path`, worst block first."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as debug

    producer = {out: node.name for node in onnx.load(str(float_path)).graph.node for out in node.output}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        debug.modify_model_output_intermediate_tensors(str(float_path), str(float_aug), save_as_external_data=False)
        debug.modify_model_output_intermediate_tensors(str(qdq_path), str(qdq_aug), save_as_external_data=False)
        reader = _Batches(input_name, batches)
        matching = debug.create_activation_matching(debug.collect_activations(str(qdq_aug), reader),
                                                    debug.collect_activations(str(float_aug), reader))
    worst: dict[str, BlockNoise] = {}
    for tensor, errors in debug.compute_activation_error(matching).items():
        sqnr = errors.get("qdq_err")
        node = producer.get(tensor)
        if sqnr is None or node is None or not math.isfinite(float(sqnr)):
            continue
        block = block_of(node)
        if block not in worst or sqnr < worst[block].sqnr_db:
            worst[block] = BlockNoise(block, float(sqnr), tensor)
    return sorted(worst.values(), key=lambda b: b.sqnr_db)


def noisy_blocks(noise: Sequence[BlockNoise], min_sqnr_db: float) -> list[BlockNoise]:
    """The blocks whose worst activation SQNR is below `min_sqnr_db`."""
    return [b for b in noise if b.sqnr_db < min_sqnr_db]


def nodes_in_blocks(proto, blocks: Sequence[str]) -> list[str]:
    """Names of every node of `proto` that belongs to one of `blocks`."""
    wanted = set(blocks)
    return [node.name for node in proto.graph.node if block_of(node.name) in wanted]
