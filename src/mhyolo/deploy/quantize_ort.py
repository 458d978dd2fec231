"""Static INT8 quantization of an exported `.onnx` with ONNX Runtime (QDQ format).

Choices, and why:

* **Every op type, not only Conv.** In YOLOv5 each Conv is followed by SiLU
  (Sigmoid * Mul); quantizing only the Convs leaves those in float between a
  Dequantize and a Quantize node per layer, so the INT8 model spends its time
  converting and is no faster than FP32. With all ops quantized the activations stay
  INT8 from one Conv to the next.
* **The graph ends in float.** The final Sigmoid / Softmax nodes (and the Concat /
  reshaping that follows a Softmax) are excluded: their outputs are probabilities
  read by `reconstruct`, and rounding them to a 1/255 grid would only lose
  resolution near the score threshold for no speed gain.
* **Box logits in float.** The 1x1 Conv that writes `boxes_pN` is excluded too: width
  and height are (2 sigmoid)^2 x anchor, so 256 levels over the logit range move a box
  edge by a few percent of its anchor, which is what mAP@0.5:0.95 measures. On the demo
  ball model at 320 (594 train-split images) all-INT8 lost 0.007 mAP50-95 and
  float box convs 0.000, for convs that are a fraction of a percent of the work.
* **Weights QInt8 per channel, activations QUInt8.** Per-channel weights keep the
  fused BatchNorm scales apart; on x86 CPUs without VNNI, ORT's U8S8 kernels are
  the fast path (signed activations run slower than FP32).
* **The weight range follows the CPU (`reduce_range`).** x86 CPUs without VNNI multiply
  uint8 x int8 pairs into an int16 sum that overflows with full-range weights
  (2 x 255 x 127 > 32767); NNCF's `overflow_fix` exists for the same reason. On an
  AVX2 machine, full-range weights moved person scores on the sample images by up to
  0.14 and 7-bit weights by under 0.05. With VNNI (or AMX) the sums are 32-bit and the
  7-bit weights only lose accuracy (on a Xeon with VNNI: mAP50 -0.033 with 7-bit weights,
  +0.002 with 8-bit, same speed). Unless told, the range is chosen for the CPU that
  quantizes (`mhyolo.machine.ort_weight_range`) and recorded in the metadata, with the
  reason; a model meant for other CPUs should say which.
* **Noisy blocks can stay in float** (`min_sqnr_db`, off by default). After a first
  all-INT8 pass, the SQNR of every activation against its own Quantize/Dequantize
  (`mhyolo.deploy.sensitivity`, on a few calibration images) finds the blocks whose range
  is set by outliers; those below the threshold are quantized again in float. On the
  ball models that is the second conv and a conv of the first C3 block; the accuracy it
  buys was within the noise of our validation sets (see `SUGGESTED_MIN_SQNR_DB`) and it
  costs 5-7 % of the INT8 latency, so it is there for models where it matters.
* **`quant_pre_process` first** (shape inference and graph clean-up ORT recommends
  before quantizing); when it fails the plain graph is quantized and that is said.
* The mhyolo metadata are copied, so `load_backend` reads the INT8 file like the FP32
  one, with `extra["quantization"]` saying how it was made.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mhyolo.infer.layout import BOX_OUTPUT_PREFIX, METADATA_KEY
from mhyolo.deploy.onnx_export import write_onnx
from mhyolo.infer.onnx_metadata import read_onnx_metadata
from mhyolo.deploy.sensitivity import SENSITIVITY_IMAGES, block_noise, block_of, noisy_blocks, nodes_in_blocks
from mhyolo.errors import ConfigError, MhyoloError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Ops that only move or regroup probabilities after the final Softmax: kept in float with it.
_LAYOUT_OPS = {"Concat", "Reshape", "Transpose", "Split", "Slice", "Identity", "Flatten", "Squeeze", "Unsqueeze"}
_FINAL_ACTIVATIONS = {"Sigmoid", "Softmax"}
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclass
class OpCoverage:
    """How much of a QDQ graph runs in INT8: an op counts as quantized when every
    activation input comes from a DequantizeLinear (what ORT fuses into an INT8 kernel)."""

    quantize_linear: int
    dequantize_linear: int
    quantized_ops: Counter = field(default_factory=Counter)
    float_ops: Counter = field(default_factory=Counter)
    output_types: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        def fmt(counts: Counter) -> str:
            return ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "none"

        return (f"{self.quantize_linear} QuantizeLinear / {self.dequantize_linear} DequantizeLinear nodes; "
                f"INT8 ops: {fmt(self.quantized_ops)}; float ops: {fmt(self.float_ops)}")


class _Reader:
    """ORT's CalibrationDataReader over in-memory batches, with a progress bar."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray], progress: bool) -> None:
        self.input_name = input_name
        self.batches = batches
        self.progress = progress
        self.rewind()

    def rewind(self) -> None:
        self._bar = tqdm(total=len(self.batches), desc="calibration", unit="img", leave=False,
                         disable=not self.progress)
        self._items = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._items, None)
        if batch is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}


def final_activation_nodes(proto) -> list[str]:
    """Names of the nodes that produce the graph outputs from the last Sigmoid/Softmax on:
    walking back from each output through layout ops, up to and including the activation,
    and for the box outputs (`boxes_*`) also the Conv that feeds that Sigmoid."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    excluded: list[str] = []
    seen: set[str] = set()
    stack = [(o.name, o.name.startswith(BOX_OUTPUT_PREFIX)) for o in proto.graph.output]
    while stack:
        name, box = stack.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        activation, layout = node.op_type in _FINAL_ACTIVATIONS, node.op_type in _LAYOUT_OPS
        if not (activation or layout or (box and node.op_type == "Conv")):  # a box Conv: the logits
            continue
        seen.add(node.name)
        excluded.append(node.name)
        if layout or (box and activation):  # past a box Sigmoid, on to its Conv
            stack.extend((i, box) for i in node.input)
    return excluded


def op_coverage(proto) -> OpCoverage:
    """Count Q/DQ nodes and which op types run in INT8 (every activation input from a
    DequantizeLinear, every output into a QuantizeLinear) or in float (anything else)."""
    import onnx

    constants = {init.name for init in proto.graph.initializer}
    constants |= {out for node in proto.graph.node if node.op_type == "Constant" for out in node.output}
    producer = {out: node for node in proto.graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    graph_outputs = {o.name for o in proto.graph.output}
    ops = Counter(node.op_type for node in proto.graph.node)
    coverage = OpCoverage(quantize_linear=ops["QuantizeLinear"], dequantize_linear=ops["DequantizeLinear"])
    for node in proto.graph.node:
        if node.op_type in _QDQ_OPS or node.op_type == "Constant":
            continue
        activations = [name for name in node.input if name and name not in constants]
        from_dq = all(name in producer and producer[name].op_type == "DequantizeLinear" for name in activations)
        into_q = all(name not in graph_outputs and consumers.get(name) and
                     all(op == "QuantizeLinear" for op in consumers[name]) for name in node.output if name)
        int8 = bool(activations) and from_dq and into_q
        (coverage.quantized_ops if int8 else coverage.float_ops)[node.op_type] += 1
    for output in proto.graph.output:
        coverage.output_types[output.name] = onnx.TensorProto.DataType.Name(output.type.tensor_type.elem_type)
    return coverage


def _name_nodes(proto) -> None:
    """Give every node a unique name: `nodes_to_exclude` refers to nodes by name."""
    used = {node.name for node in proto.graph.node if node.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _preprocess(src: Path, dst: Path) -> str | None:
    """`quant_pre_process` into `dst`; the reason it failed, or None."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - shape inference raises many kinds; we fall back
        return f"{type(exc).__name__}: {exc}"
    return None if dst.is_file() else "no output written"


def quantize_onnx_static(onnx_path: str | Path, out_path: str | Path, calib: Sequence[np.ndarray],
                         per_channel: bool = True, method: str = "minmax", reduce_range: bool | None = None,
                         preprocess: bool = True, progress: bool = True,
                         min_sqnr_db: float | None = None, float_blocks: Sequence[str] = ()) -> Path:
    """Write an INT8 (QDQ) copy of the exported `onnx_path` to `out_path`, calibrated on `calib`
    ((1, 3, H, W) float32 arrays from `calibration_batches`). Graph outputs stay float32; blocks
    whose activation SQNR is below `min_sqnr_db` stay float (None: every block INT8), and so do
    the blocks named in `float_blocks` (e.g. "/layers.1/", see `sensitivity.block_of`).
    `reduce_range` None: 7-bit or 8-bit weights as this machine's CPU calls for."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from mhyolo.machine import cpu_info, ort_weight_range

    cpu = cpu_info()
    if reduce_range is None:
        chosen = ort_weight_range(cpu)
        reduce_range, range_reason = chosen.reduce_range, f"chosen for this CPU: {chosen.reason}"
    else:
        range_reason = f"{'7' if reduce_range else '8'}-bit weights as asked"

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if not calib:
        raise ConfigError(f"{onnx_path}: no calibration images to quantize with")
    meta = read_onnx_metadata(onnx_path)
    shape = (1, 3, meta.imgsz, meta.imgsz)
    bad = [tuple(b.shape) for b in calib if tuple(b.shape) != shape]
    if bad:
        raise ConfigError(f"{onnx_path}: calibration batches must be {shape} (the exported size), got {bad[0]}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        tmp = Path(tmp)
        source = onnx_path
        failure = _preprocess(onnx_path, tmp / "pre.onnx") if preprocess else "not asked for"
        if failure is None:
            source = tmp / "pre.onnx"
        elif preprocess:
            print(f"{onnx_path}: quant_pre_process failed ({failure}); quantizing the graph as exported",
                  file=sys.stderr)
        proto = onnx.load(str(source))
        _name_nodes(proto)
        excluded = final_activation_nodes(proto)
        chosen = nodes_in_blocks(proto, float_blocks)
        unknown = sorted(set(float_blocks) - {block_of(name) for name in chosen})
        if unknown:
            raise ConfigError(f"{onnx_path}: no block named {', '.join(unknown)} "
                              "(block names look like /layers.1/ or /layers.2/cv1/)")
        excluded += chosen
        named = tmp / "named.onnx"
        onnx.save_model(proto, str(named))
        raw = tmp / "int8.onnx"
        calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                     "percentile": CalibrationMethod.Percentile}[method]

        def run(nodes_to_exclude: list[str]) -> None:
            try:
                quantize_static(
                    str(named), str(raw), _Reader(meta.input_name, calib, progress), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=None, per_channel=per_channel, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=nodes_to_exclude,
                    calibrate_method=calibrate, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            except Exception as exc:  # noqa: BLE001 - ORT raises many kinds; name the model
                raise MhyoloError(f"{onnx_path}: ONNX Runtime static quantization failed: {exc}") from exc

        run(excluded)
        noisy = []
        if min_sqnr_db is not None:
            noise = block_noise(named, raw, meta.input_name, calib[:SENSITIVITY_IMAGES])
            requested = set(float_blocks)  # already float (their outputs may still be quantized)
            noisy = [b for b in noisy_blocks(noise, min_sqnr_db) if b.block not in requested]
            if noisy:
                if progress:
                    print("kept in float (activation SQNR below "
                          f"{min_sqnr_db:g} dB): " + ", ".join(f"{b.block} {b.sqnr_db:.1f} dB" for b in noisy),
                          file=sys.stderr)
                excluded += nodes_in_blocks(proto, [b.block for b in noisy])
                run(excluded)
        quantized = onnx.load(str(raw))
    coverage = op_coverage(quantized)
    not_float = {k: v for k, v in coverage.output_types.items() if v != "FLOAT"}
    if not_float:
        raise MhyoloError(f"{onnx_path}: quantized graph outputs must stay float32, got {not_float}")
    meta.extra = {**meta.extra, "quantization": {
        "precision": "int8", "tool": "onnxruntime", "format": "QDQ", "weights": "QInt8",
        "per_channel": per_channel, "activations": "QUInt8", "reduce_range": reduce_range,
        "weight_range": range_reason, "quantized_on": cpu.describe(), "method": method,
        "calibration_images": len(calib), "pre_processed": failure is None, "float_nodes": excluded,
        "min_sqnr_db": min_sqnr_db, "requested_float_blocks": list(float_blocks),
        "float_blocks": [{"block": b.block, "sqnr_db": b.sqnr_db} for b in noisy]}}
    source_props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    for key, value in source_props.items():  # any other metadata are carried over as they were
        if key != METADATA_KEY and key not in {p.key for p in quantized.metadata_props}:
            quantized.metadata_props.add(key=key, value=value)
    write_onnx(quantized, out_path, meta)
    return out_path
