"""An exported model read into OpenVINO with its mhyolo metadata: what INT8 quantization and the
uint8-input rewrite (`deploy.openvino_input`) both start from."""

from __future__ import annotations

from pathlib import Path

from mhyolo.infer.layout import METADATA_KEY, ExportMetadata
from mhyolo.infer.onnx_metadata import read_onnx_metadata
from mhyolo.errors import ConfigError, MhyoloError


def openvino_modules():
    """(openvino, nncf), or one error saying how to install them."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise MhyoloError("OpenVINO quantization needs 'openvino' and 'nncf' (pip install 'mhyolo[deploy]')") from exc
    return ov, nncf


def read_model_and_metadata(model_path: str | Path):
    """(ov.Model, ExportMetadata) from an exported `.onnx` or an mhyolo IR `.xml`."""
    ov, _ = openvino_modules()
    path = Path(model_path)
    if path.suffix.lower() not in (".onnx", ".xml"):
        raise ConfigError(f"{path}: OpenVINO quantization takes an exported .onnx or .xml model")
    if not path.is_file():
        raise MhyoloError(f"model file not found: {path}")
    try:  # convert_model, as `export_openvino` does: it fuses Sigmoid * Mul into Swish, so NNCF
        # quantizes the IR's graph (fewer FakeQuantize nodes, faster) whichever file it is given
        model = ov.convert_model(str(path)) if path.suffix.lower() == ".onnx" else ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises generic RuntimeErrors
        raise MhyoloError(f"{path}: OpenVINO cannot read it: {exc}") from exc
    if path.suffix.lower() == ".onnx":
        return model, read_onnx_metadata(path)
    if not model.has_rt_info([METADATA_KEY]):
        raise MhyoloError(f"{path}: an OpenVINO IR without '{METADATA_KEY}' metadata: not written by mhyolo export")
    return model, ExportMetadata.from_json(model.get_rt_info([METADATA_KEY]).astype(str), str(path))
