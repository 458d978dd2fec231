"""A crop classifier as one `.safetensors` file: its tensors plus JSON metadata that rebuild it.

The metadata key (`mhyolo_classifier`) is not the detector's (`mhyolo`), so each loader can tell a
detector checkpoint from a classifier one and say which it was given. Writes are atomic, as for
detector checkpoints. Nothing is unpickled. The same metadata travel in an exported `.onnx`
(`read_classifier_onnx_metadata`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from mhyolo.classify.model import ClassifierSpec, CropClassifierNet, build_classifier
from mhyolo.infer.onnx_metadata import read_metadata_props
from mhyolo.errors import ConfigError, MhyoloError, WeightsError
from mhyolo.model.weights import CLASSIFIER_METADATA_KEY, write_safetensors
from mhyolo.model.weights import METADATA_KEY as DETECTOR_METADATA_KEY

METADATA_KEY = CLASSIFIER_METADATA_KEY
FORMAT_VERSION = 1


@dataclass
class ClassifierCheckpoint:
    net: CropClassifierNet
    spec: ClassifierSpec
    metadata: dict[str, Any]  # spec, training settings and scores


def save_classifier(path: str | Path, net: CropClassifierNet, spec: ClassifierSpec,
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write tensors + metadata atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT_VERSION, "spec": spec.to_dict(), **(metadata or {})}
    return write_safetensors(path, tensors, meta, key=METADATA_KEY)


def read_classifier_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a classifier checkpoint; a detector checkpoint or another file is refused by name."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"classifier file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    if METADATA_KEY not in stored:
        what = ("a detector checkpoint" if DETECTOR_METADATA_KEY in stored
                else "a safetensors file without mhyolo metadata")
        raise WeightsError(f"{path}: {what}, not a crop classifier (`mhyolo classify train` writes one)")
    try:
        meta = json.loads(stored[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: corrupt classifier metadata: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise WeightsError(f"{path}: classifier metadata lack the 'spec' that rebuilds the network")
    return meta


def read_classifier_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The classifier metadata of an exported `.onnx` (a detector export is named as one)."""
    path = Path(path)
    props = read_metadata_props(path)
    if METADATA_KEY not in props:
        what = "a detector export" if "mhyolo" in props else "an ONNX file without mhyolo metadata"
        raise MhyoloError(f"{path}: {what}, not a crop classifier (`mhyolo classify export` writes one)")
    return json.loads(props[METADATA_KEY])


def spec_from_metadata(meta: dict[str, Any], source: str) -> ClassifierSpec:
    try:
        return ClassifierSpec(**meta["spec"])
    except (TypeError, ConfigError) as exc:
        raise WeightsError(f"{source}: classifier 'spec' does not describe a classifier: {exc}") from exc


def load_classifier_checkpoint(path: str | Path) -> ClassifierCheckpoint:
    """Rebuild the network (no pretrained weights fetched) and load its tensors, strictly."""
    path = Path(path)
    meta = read_classifier_metadata(path)
    spec = spec_from_metadata(meta, str(path))
    stored = ClassifierSpec(**spec.to_dict())
    net = build_classifier(spec, pretrained=False)
    spec.mean, spec.std = stored.mean, stored.std  # as trained, whatever the builder's defaults are now
    try:
        tensors = load_file(str(path))
        net.load_state_dict(tensors, strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: tensors do not fit the stored classifier ({spec.arch}): {exc}") from exc
    return ClassifierCheckpoint(net=net.eval(), spec=spec, metadata=meta)
