"""What an `.onnx` file says of itself, read without loading its weights: its `metadata_props`, and the
`mhyolo` metadata of an exported detector (the output layout the runtimes read). The runtimes need
only this; writing `.onnx` files is `deploy`'s. Read with `onnx` where it is installed, else with
ONNX Runtime's model metadata (the runtime install has no `onnx`)."""

from __future__ import annotations

from pathlib import Path

from mhyolo.errors import MhyoloError
from mhyolo.infer.layout import METADATA_KEY, ExportMetadata


def read_metadata_props(path: Path) -> dict[str, str]:
    """The `metadata_props` of an `.onnx` file (its weights are not loaded by `onnx`)."""
    try:
        import onnx
    except ImportError:
        return _props_from_onnxruntime(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have no common base
        raise MhyoloError(f"{path}: not a readable ONNX file: {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}


def _props_from_onnxruntime(path: Path) -> dict[str, str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MhyoloError(f"{path}: reading .onnx files needs 'onnxruntime' (pip install 'mhyolo[onnxruntime]') "
                          "or 'onnx'") from exc
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise MhyoloError(f"{path}: not a readable ONNX file: {exc}") from exc
    return dict(session.get_modelmeta().custom_metadata_map)


def read_onnx_metadata(path: str | Path) -> ExportMetadata:
    """The `mhyolo` metadata of an exported `.onnx` (weights are not loaded)."""
    path = Path(path)
    return metadata_from_props(read_metadata_props(path), path)


def metadata_from_props(props: dict[str, str], path: Path) -> ExportMetadata:
    """The `mhyolo` metadata among an `.onnx` file's `metadata_props` (however they were read)."""
    if METADATA_KEY not in props:
        raise MhyoloError(f"{path}: an ONNX file without '{METADATA_KEY}' metadata: not exported by mhyolo export")
    return ExportMetadata.from_json(props[METADATA_KEY], str(path))
