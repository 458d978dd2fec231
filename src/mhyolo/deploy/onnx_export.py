"""Writing the export graph as one self-contained `.onnx` file (and an OpenVINO IR).

The TorchScript-based exporter (`dynamo=False`) is used: with torch 2.14 it writes a
single file with the weights inside for models of this size and needs no extra
package, while the torch.export-based one requires `onnxscript`. The result is
simplified with onnxslim when that succeeds; callers validate either way and can
ask for the unsimplified graph (`simplify=False`) when the simplified one fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mhyolo.defaults import DEFAULT_IMGSZ
from mhyolo.deploy.graph import ExportGraph
from mhyolo.deploy.onnx_file import trace_onnx, write_onnx_file
from mhyolo.errors import MhyoloError
from mhyolo.infer.layout import METADATA_KEY, ExportMetadata
from mhyolo.infer.onnx_metadata import read_onnx_metadata
from mhyolo.model.yolo import YoloModel

DEFAULT_OPSET = 18


@dataclass
class OnnxExport:
    path: Path
    metadata: ExportMetadata
    simplified: bool


def _simplify(proto):
    """onnxslim's version of the graph, or None when it cannot produce one."""
    try:
        import onnxslim
    except ImportError:
        return None
    try:
        return onnxslim.slim(proto)
    except Exception:  # noqa: BLE001 - a failed simplification only means we keep the original graph
        return None


def export_onnx(model: YoloModel, path: str | Path, imgsz: int = DEFAULT_IMGSZ, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, simplify: bool = True) -> OnnxExport:
    """Fuse, wrap (`ExportGraph`) and export `model`; metadata go into `metadata_props`."""
    path = Path(path)
    graph = ExportGraph(model, imgsz, fuse=True, dynamic_batch=dynamic_batch).eval()
    meta = graph.metadata
    names = meta.output_names
    dynamic_axes = {name: {0: "batch"} for name in [meta.input_name, *names]} if dynamic_batch else None
    proto = trace_onnx(graph, torch.zeros(1, 3, imgsz, imgsz), path, opset, meta.input_name, names, dynamic_axes)
    simplified = None
    if simplify:
        simplified = _simplify(proto)
        if simplified is not None and [o.name for o in simplified.graph.output] != names:
            simplified = None
    final = simplified if simplified is not None else proto
    write_onnx(final, path, meta)
    return OnnxExport(path=path, metadata=meta, simplified=simplified is not None)


def write_onnx(proto, path: Path, meta: ExportMetadata) -> None:
    """Store `meta` in the model's metadata_props, check it, and write one file atomically."""
    write_onnx_file(proto, path, METADATA_KEY, meta.to_json())


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an exported `.onnx` into OpenVINO IR (`.xml` + `.bin`, FP32 weights), metadata in rt_info."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise MhyoloError("OpenVINO export needs the 'openvino' package (pip install 'mhyolo[deploy]')") from exc
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    meta = read_onnx_metadata(onnx_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov_model = ov.convert_model(str(onnx_path))
    ov_model.set_rt_info(meta.to_json(), [METADATA_KEY])
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
    return xml_path
