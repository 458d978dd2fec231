"""What an `.onnx` file says of itself, read without loading its weights: its `metadata_props`, and the
`mhyolo` metadata of an exported detector (the output layout the runtimes read). The runtimes need
only this; writing `.onnx` files is `deploy`'s."""

from __future__ import annotations

from pathlib import Path

from mhyolo.errors import MhyoloError
from mhyolo.infer.layout import METADATA_KEY, ExportMetadata


def read_metadata_props(path: Path) -> dict[str, str]:
    """The `metadata_props` of an `.onnx` file (its weights are not loaded)."""
    try:
        import onnx
    except ImportError as exc:
        raise MhyoloError("reading .onnx files needs 'onnx' (pip install 'mhyolo[deploy]')") from exc
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have no common base
        raise MhyoloError(f"{path}: not a readable ONNX file: {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}


def read_onnx_metadata(path: str | Path) -> ExportMetadata:
    """The `mhyolo` metadata of an exported `.onnx` (weights are not loaded)."""
    path = Path(path)
    props = read_metadata_props(path)
    if METADATA_KEY not in props:
        raise MhyoloError(f"{path}: an ONNX file without '{METADATA_KEY}' metadata: not exported by mhyolo export")
    return ExportMetadata.from_json(props[METADATA_KEY], str(path))
