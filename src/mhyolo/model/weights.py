"""Finding, importing, saving and loading model weights.

Two formats: official YOLOv5 `.pt` pickles, read only through the restricted
unpickler in `safe_pickle`, and our own `.safetensors` checkpoints whose JSON
metadata carries everything needed to rebuild the model (config, class names,
strides, anchors, training settings). Nothing here unpickles with `torch.load`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mhyolo.errors import WeightsError
from mhyolo.model.safe_pickle import Stub, module_state_dict, read_checkpoint
from mhyolo.model.yolo import YoloModel
from mhyolo.paths import cache_dir, shared_dir

RELEASE_URL = "https://github.com/ultralytics/yolov5/releases/download/v7.0/{name}"
OFFICIAL_NAMES = tuple(f"yolov5{size}{suffix}.pt" for size in "nsmlx" for suffix in ("", "6"))
METADATA_KEY = "mhyolo"
CLASSIFIER_METADATA_KEY = "mhyolo_classifier"  # a crop classifier's checkpoint (`mhyolo classify`)
FORMAT_VERSION = 1


# ---------------------------------------------------------------- resolution
def resolve_weights(weights: str | Path, download: bool = True) -> Path:
    """An existing path as it is; a bare name from the cache, then `../shared/weights`,
    then the official release address (saved into the cache)."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    name = path.name
    if path.parent != Path(".") or not name:
        raise WeightsError(f"weights file not found: {path}")
    candidates = [cache_dir() / name, shared_dir() / "weights" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = [str(c) for c in candidates]
    if name in OFFICIAL_NAMES and download:
        url = RELEASE_URL.format(name=name)
        try:
            return _download(url, cache_dir() / name)
        except (OSError, urllib.error.URLError) as exc:
            raise WeightsError(
                f"cannot find '{name}' (looked in {', '.join(tried)}) and the download from {url} failed ({exc}). "
                f"Download it on a machine with internet access and put it in {cache_dir()} "
                f"(or set MHYOLO_HOME), or pass its path with --weights."
            ) from exc
    raise WeightsError(f"cannot find weights '{name}' (looked in ./, {', '.join(tried)}); pass an existing path")


def _download(url: str, target: Path, timeout: float = 30.0) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https address)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
            shutil.copyfileobj(response, tmp)
    os.replace(tmp.name, target)
    return target


# ---------------------------------------------------------- official import
@dataclass
class ImportedWeights:
    """An official checkpoint reduced to plain data: config, class names and tensors."""

    config: dict[str, Any]
    names: list[str]
    state_dict: dict[str, torch.Tensor]
    source: Path
    info: dict[str, Any] = field(default_factory=dict)


def import_official(path: str | Path) -> ImportedWeights:
    """Read a YOLOv5 v6.x/v7.0 `.pt` (Model or DetectionModel) without executing it: the release
    weights or a `best.pt`/`last.pt` that YOLOv5's train.py wrote. Like YOLOv5's own loader, the
    EMA weights are taken when the file has them (`ema` is set until the optimizer is stripped)."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{path}: expected a checkpoint dict, found {type(checkpoint).__name__}")
    key = "ema" if checkpoint.get("ema") is not None else "model"
    module = checkpoint.get(key)
    if not isinstance(module, Stub):
        raise WeightsError(f"{path}: no pickled model under 'model' or 'ema'")
    state = module.state
    config = state.get("yaml")
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: the model carries no architecture description ('yaml')")
    _check_detect_head(path, module)
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in module_state_dict(module).items()}
    names_value = state.get("names")
    if isinstance(names_value, dict):
        names = [str(names_value[k]) for k in sorted(names_value)]
    elif isinstance(names_value, (list, tuple)):
        names = [str(n) for n in names_value]
    else:
        names = [str(i) for i in range(int(config.get("nc", 0)))]
    config = dict(config)
    config.pop("ch", None)
    if "activation" in config:
        config["act"] = _official_activation(path, config.pop("activation"))
    if isinstance(config.get("anchors"), int):  # auto-anchor configs: take them from the weights
        config["anchors"] = _anchors_from_weights(module, state_dict)
    info = {k: _plain(checkpoint.get(k)) for k in ("epoch", "date", "best_fitness")
            if not isinstance(checkpoint.get(k), Stub)}
    info["weights_from"] = key
    return ImportedWeights(config=config, names=names, state_dict=state_dict, source=path, info=info)


# YOLOv5's model files name their activation as Python code (`activation: nn.ReLU()`), which its
# parser evaluates; the ones it documents, read as text here.
OFFICIAL_ACTIVATIONS = {"nn.SiLU()": "silu", "nn.ReLU()": "relu", "nn.LeakyReLU(0.1)": "leakyrelu"}


def _official_activation(path: Path, value: Any) -> str:
    """Our `act` for an official config's `activation`; one we do not build is refused (loading the
    weights into another activation would give a model that runs but detects nothing sensible)."""
    text = "".join(str(value).split()) if value is not None else "nn.SiLU()"
    if text not in OFFICIAL_ACTIVATIONS:
        raise WeightsError(f"{path}: the model was trained with activation {value!r}; only "
                           f"{', '.join(OFFICIAL_ACTIVATIONS)} are supported")
    return OFFICIAL_ACTIVATIONS[text]


def _check_detect_head(path: Path, module: Stub) -> None:
    """Only detection models load: name the head of a segmentation or classification checkpoint."""
    layers = module.state.get("_modules", {}).get("model")
    children = list(layers.state.get("_modules", {}).values()) if isinstance(layers, Stub) else []
    head = type(children[-1]).stub_name if children and isinstance(children[-1], Stub) else "nothing"
    if head != "models.yolo.Detect":
        raise WeightsError(f"{path}: a {type(module).stub_name} ending in {head}: only detection checkpoints "
                           f"(ending in models.yolo.Detect) are supported")


def _plain(value: Any) -> Any:
    """A checkpoint value as JSON-ready data (numpy fitness arrays as numbers)."""
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    return value


def _anchors_from_weights(module: Stub, state_dict: dict[str, torch.Tensor]) -> list[list[float]]:
    detect = next(child for child in reversed(list(module.state["_modules"]["model"].state["_modules"].values())))
    strides = detect.state.get("stride")
    key = next(k for k in state_dict if k.endswith(".anchors"))
    grid = state_dict[key]
    return (grid * torch.as_tensor(strides).view(-1, 1, 1)).reshape(grid.shape[0], -1).tolist()


def model_from_official(imported: ImportedWeights) -> YoloModel:
    model = YoloModel(imported.config, names=imported.names)
    try:
        model.load_state_dict(imported.state_dict, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{imported.source}: weights do not fit the architecture they describe: {exc}") from exc
    return model


# ------------------------------------------------------------- safetensors
@dataclass
class Checkpoint:
    """A loaded `.safetensors` checkpoint: the model, its metadata, and any extra tensors
    (e.g. optimizer or EMA state, stored under prefixed keys)."""

    model: YoloModel
    metadata: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: YoloModel, metadata: dict[str, Any] | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write model weights + JSON metadata atomically (temp file, fsync, rename), so an
    interruption at any moment leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for key, value in (extra or {}).items():
        tensors[f"extra/{key}"] = value.detach().contiguous().cpu()
    meta = {"format": FORMAT_VERSION, **model.metadata(), **(metadata or {})}
    return write_safetensors(path, tensors, meta)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                      key: str = METADATA_KEY) -> Path:
    """Tensors + JSON metadata written atomically (temp file, fsync, rename): an interrupted save
    never leaves a half-written checkpoint where a good one was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={key: json.dumps(meta)})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of one of our checkpoints, without loading tensors."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors checkpoint (truncated or corrupt?): {exc}") from exc
    raw = stored.get(METADATA_KEY)
    if raw is None and CLASSIFIER_METADATA_KEY in stored:
        raise WeightsError(f"{path}: a crop classifier checkpoint (`mhyolo classify`), not a detector")
    if raw is None:
        raise WeightsError(f"{path}: a safetensors file without mhyolo metadata: not one of our checkpoints")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: corrupt metadata: {exc}") from exc


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty (0 bytes)")
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read tensors (truncated or corrupt?): {exc}") from exc
    extra = {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
    state = {k: v for k, v in tensors.items() if not k.startswith("extra/")}
    model = YoloModel(metadata["config"], names=metadata.get("names"), trained_imgsz=_trained_size(metadata))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: tensors do not fit the stored architecture: {exc}") from exc
    return Checkpoint(model=model, metadata=metadata, extra=extra)


def _trained_size(metadata: dict[str, Any]) -> int | None:
    size = metadata.get("train_config", {}).get("imgsz")
    return int(size) if isinstance(size, int) else None


# ------------------------------------------------------------------ facade
def trained_imgsz(weights: str | Path) -> int | None:
    """The input size a `.safetensors` model was trained at (from its metadata only); None otherwise."""
    path = resolve_weights(weights)
    return _trained_size(read_metadata(path)) if path.suffix == ".safetensors" else None


def load_model(weights: str | Path, device: str | torch.device = "cpu") -> YoloModel:
    """Any supported weights (official `.pt` or our `.safetensors`, path or bare name) as a model in eval mode."""
    path = resolve_weights(weights)
    if path.suffix == ".safetensors":
        model = load_checkpoint(path).model
    elif path.suffix in (".pt", ".pth"):
        model = model_from_official(import_official(path))
    else:
        raise WeightsError(f"{path}: unknown weights format '{path.suffix}' (expected .pt or .safetensors)")
    return model.to(device).eval()


def import_weights(source: str | Path, target: str | Path) -> Path:
    """Convert an official `.pt` into our `.safetensors` format."""
    imported = import_official(resolve_weights(source))
    model = model_from_official(imported)
    return save_checkpoint(target, model, {"imported_from": imported.source.name, "source_info": imported.info})
