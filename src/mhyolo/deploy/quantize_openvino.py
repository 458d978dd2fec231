"""INT8 OpenVINO IR with NNCF post-training quantization: default or accuracy-aware.

* **Default** (`nncf.quantize`) inserts FakeQuantize nodes with ranges from the
  calibration images (plus NNCF's bias correction).
* **Accuracy-aware** (`nncf.quantize_with_accuracy_control`) starts from the default
  result, scores it on the validation split with OUR post-processing (`reconstruct`
  + `validate`: mAP@0.5:0.95, or typed mAP@0.5:0.95 for a model with a type head),
  and reverts the most harmful quantized layers to float until the drop from FP32
  is at most `max_drop` (absolute).

The convolutions that write the box logits (`boxes_pN`) are in NNCF's ignored scope, as
they are kept float for ONNX Runtime: width and height are (2 sigmoid)^2 x anchor, so an
8-bit grid on the logits moves box edges by a few percent, which is what mAP@0.5:0.95
measures (the ball model trained at 640 lost 0.014 of it with them quantized).

Preset MIXED: weights symmetric, activations asymmetric. The activations here are
mostly non-negative (the [0, 1] input, SiLU outputs bounded below by -0.28), so a
symmetric grid would waste about half of its 256 levels on values that never occur;
OpenVINO's CPU kernels handle the zero point at negligible cost.

By default (`input_kind="uint8_bgr_nhwc"`) the IR takes the letterboxed uint8 BGR image itself
(`deploy.openvino_input`): the pre-processing moves into the graph, where the CPU plugin merges it
with the input's quantization (calibration and NNCF's accuracy checks still run on the float graph).

The IR is saved with FP32 weights where they stay float (`compress_to_fp16=False`)
and the mhyolo metadata in rt_info, as `export_openvino` does, so `OpenVinoBackend`
loads the INT8 IR like the FP32 one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from mhyolo.infer.layout import BOX_OUTPUT_PREFIX, FLOAT_RGB_NCHW, METADATA_KEY, UINT8_BGR_NHWC, ExportMetadata
from mhyolo.deploy.openvino_model import openvino_modules, read_model_and_metadata
from mhyolo.errors import ConfigError, MhyoloError
from mhyolo.infer.backends.base import ExportedBackend

MODES = ("default", "accuracy")
PRESETS = ("mixed", "performance")
OVERFLOW_FIXES = ("enable", "first_layer", "disable")
INPUTS = {"uint8": UINT8_BGR_NHWC, "float": FLOAT_RGB_NCHW}  # what the INT8 IR may take, by CLI name
DEFAULT_INPUT = UINT8_BGR_NHWC  # measured faster and as accurate (docs/results/int8_cpu.md)


def box_convolutions(model) -> list[str]:
    """Friendly names of the Convolution ops that feed the `boxes_*` outputs (through their
    Sigmoid and bias Add): what stays float."""
    names = []
    for output in model.outputs:
        if not output.get_any_name().startswith(BOX_OUTPUT_PREFIX):
            continue
        node = output.get_node()
        while node.get_type_name() != "Convolution" and node.get_input_size() > 0:
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Convolution":
            names.append(node.get_friendly_name())
    return names


class CompiledModelBackend(ExportedBackend):
    """An already compiled OpenVINO model as an `InferenceBackend`: what NNCF hands the
    validation function, scored with the same `reconstruct` as every other runtime. Its input form
    is the compiled graph's (a saved uint8-input IR scored with the float model's metadata is fed
    uint8 letterboxes)."""

    def __init__(self, compiled, metadata: ExportMetadata, path: str | Path = "<compiled model>") -> None:
        takes_uint8 = compiled.input(metadata.input_name).get_element_type().to_dtype() == np.uint8
        kind = UINT8_BGR_NHWC if takes_uint8 else FLOAT_RGB_NCHW
        if kind != metadata.input_kind:
            metadata = replace(metadata, input_kind=kind)
        super().__init__(path, metadata)
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in compiled.outputs]

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self.request.infer({self.metadata.input_name: batch})
        return {name: np.array(result[self.compiled.output(name)]) for name in self.output_names}


class _IndexedSubset(Subset):
    """A subset of a `YoloDataset` that still says its `imgsz` (what `validate` reads)."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, list(indices))
        self.imgsz = dataset.imgsz


@dataclass
class AccuracyTarget:
    """What the accuracy-aware mode optimises: `items` are validation sample indices
    (NNCF may pass any subset of them back) and `fn(compiled_model, items)` the metric."""

    items: list[int]
    fn: Callable[[Any, Iterable[int]], float]
    metric: str


def accuracy_target(data_yaml: str | Path, meta: ExportMetadata, split: str = "val",
                    progress: bool = False) -> AccuracyTarget:
    """Our validation metric on `split` for NNCF: mAP@0.5:0.95 of the detector, or the
    typed mAP@0.5:0.95 when the model has a type head (what quantization must not break)."""
    from mhyolo.data.dataset import YoloDataset
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import validate

    spec = load_data_spec(data_yaml)
    dataset = YoloDataset(spec, split, meta.imgsz, augment=None)
    class_agnostic = meta.nc == 1
    if not class_agnostic and meta.nc != spec.nc:
        raise ConfigError(f"the model detects {meta.nc} classes but {spec.yaml_path} names {spec.nc}")
    typed = meta.type_output is not None

    def fn(compiled, items: Iterable[int]) -> float:
        backend = CompiledModelBackend(compiled, meta)
        subset = _IndexedSubset(dataset, [int(i) for i in items])
        with torch.inference_mode():
            result = validate(backend, subset, list(spec.names), class_agnostic=class_agnostic, progress=progress)
        if typed and result.types is not None:
            value = result.types.typed_map50_95
        else:
            value = result.metrics.map50_95
        return 0.0 if value is None or np.isnan(value) else float(value)

    # NNCF scores single items too (ranking layers): a ball-free image alone has no mAP, so the
    # items are the images with at least one box
    return AccuracyTarget(items=[i for i, labels in enumerate(dataset.labels) if len(labels)], fn=fn,
                          metric="typed_map50_95" if typed else "map50_95")


def quantize_openvino(model_path: str | Path, out_xml: str | Path, calib: Sequence[np.ndarray],
                      mode: str = "default", validate_fn: Callable[[Any, Iterable], float] | None = None,
                      validation_data: Sequence | None = None, max_drop: float = 0.01,
                      subset_size: int | None = None, preset: str = "mixed",
                      overflow_fix: str = "first_layer", ranking_subset_size: int | None = None,
                      input_kind: str = DEFAULT_INPUT) -> Path:
    """Quantize an exported `.onnx` / `.xml` with NNCF and save the INT8 IR at `out_xml`.

    `calib` are (1, 3, H, W) float32 arrays from `calibration_batches`. Mode "accuracy"
    needs `validate_fn(compiled_model, items) -> float` and its `validation_data` items
    (see `accuracy_target`); NNCF keeps the drop of that metric within `max_drop`.
    `overflow_fix` "enable" uses 7-bit weights everywhere, which avoids INT8 overflow
    on x86 CPUs without VNNI (NNCF's default fixes only the first layer).
    `ranking_subset_size` bounds how many validation items NNCF runs per candidate layer
    when ranking which ones to revert (its default: up to 300), the slow part of that mode.
    `input_kind` "uint8_bgr_nhwc" (the default) saves an IR that takes the uint8 letterbox
    (`deploy.openvino_input`), "float32_rgb_nchw" one that takes the float batch as exported.
    """
    ov, nncf = openvino_modules()
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    if mode not in MODES:
        raise ConfigError(f"OpenVINO quantization mode must be one of {', '.join(MODES)}, got {mode!r}")
    if preset not in PRESETS:
        raise ConfigError(f"NNCF preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if overflow_fix not in OVERFLOW_FIXES:
        raise ConfigError(f"overflow_fix must be one of {', '.join(OVERFLOW_FIXES)}, got {overflow_fix!r}")
    if input_kind not in INPUTS.values():
        raise ConfigError(f"the INT8 IR's input must be one of {', '.join(INPUTS.values())}, got {input_kind!r}")
    if not calib:
        raise ConfigError(f"{model_path}: no calibration images to quantize with")
    model, meta = read_model_and_metadata(model_path)
    if meta.input_kind != FLOAT_RGB_NCHW:
        raise ConfigError(f"{model_path}: quantization starts from a float-input model, "
                          f"this one takes {meta.input_kind}")
    shape = (1, 3, meta.imgsz, meta.imgsz)
    bad = [tuple(b.shape) for b in calib if tuple(b.shape) != shape]
    if bad:
        raise ConfigError(f"{model_path}: calibration batches must be {shape} (the exported size), got {bad[0]}")
    calibration = nncf.Dataset(list(calib))
    float_convs = box_convolutions(model)
    common = {"preset": nncf.QuantizationPreset(preset), "subset_size": subset_size or len(calib),
              "target_device": nncf.TargetDevice.CPU, "ignored_scope": nncf.IgnoredScope(names=float_convs)}
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix if overflow_fix != "first_layer"
                                                                       else "first_layer_only"))
    info: dict[str, Any] = {"precision": "int8", "tool": "nncf", "mode": mode, "preset": preset,
                            "overflow_fix": overflow_fix, "calibration_images": len(calib),
                            "float_convolutions": float_convs, "input": input_kind}
    try:
        if mode == "default":
            quantized = nncf.quantize(model, calibration, advanced_parameters=advanced, **common)
        else:
            if validate_fn is None or not validation_data:
                raise ConfigError("accuracy-aware quantization needs a validation function and validation data "
                                  "(mhyolo.deploy.quantize_openvino.accuracy_target)")
            restorer = AdvancedAccuracyRestorerParameters()
            if ranking_subset_size:
                restorer.ranking_subset_size = int(ranking_subset_size)
            quantized = nncf.quantize_with_accuracy_control(
                model, calibration, nncf.Dataset(list(validation_data)), validate_fn, max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced,
                advanced_accuracy_restorer_parameters=restorer, **common)
            info.update(max_drop=max_drop, drop_type="absolute", validation_items=len(validation_data))
    except MhyoloError:
        raise
    except Exception as exc:  # noqa: BLE001 - NNCF raises many kinds; name the model
        raise MhyoloError(f"{model_path}: NNCF quantization ({mode}) failed: {exc}") from exc
    meta.extra = {**meta.extra, "quantization": info}
    if input_kind == UINT8_BGR_NHWC:
        from mhyolo.deploy.openvino_input import uint8_input

        quantized, meta = uint8_input(quantized, meta, str(model_path))
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    quantized.set_rt_info(meta.to_json(), [METADATA_KEY])
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def fake_quantize_count(xml_path: str | Path) -> int:
    """How many FakeQuantize nodes an IR holds (0 means nothing was quantized)."""
    ov, _ = openvino_modules()
    model = ov.Core().read_model(str(xml_path))
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")


# Ops that only move INT8 values (NNCF quantizes their inputs, not their outputs).
_INT8_PASSTHROUGH = {"Concat", "MaxPool", "Interpolate", "Reshape", "Transpose", "Split", "VariadicSplit",
                     "StridedSlice", "Squeeze", "Unsqueeze"}


def _quantized(node) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    inputs = range(node.get_input_size()) if kind == "Concat" else [0]  # others: input 0 is the data
    return kind in _INT8_PASSTHROUGH and all(_quantized(node.input_value(i).get_node()) for i in inputs)


def float_convolutions(xml_path: str | Path) -> list[str]:
    """Convolutions of an IR whose activation input is not quantized (they run in float)."""
    ov, _ = openvino_modules()
    model = ov.Core().read_model(str(xml_path))
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "Convolution" and not _quantized(op.input_value(0).get_node())]
