"""Building the model to train and saving / restoring the whole training state.

A `last` checkpoint holds the EMA weights as its model (what inference uses),
plus the raw weights and optimizer state as extra tensors and the epoch, EMA
updates and best fitness in its metadata, so `--resume` continues exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mhyolo.errors import ConfigError, WeightsError
from mhyolo.model.weights import import_official, load_checkpoint, resolve_weights, save_checkpoint
from mhyolo.model.heads import Detect, DetectionHead
from mhyolo.model.yolo import YoloModel, config_activation, load_model_config, parse_rows


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor], seed_class: int | None = None,
                     source_config: dict[str, Any] | None = None) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match; return the count and the names skipped
    (e.g. the Detect output convolutions when the number of classes changes).

    A Detect output layer whose class count differs still inherits, per anchor, the
    rows that do not depend on the classes (4 box offsets and objectness), so a
    re-shaped detector starts out finding objects where the pretrained one did.

    `seed_class` (a class of the pretrained detector, e.g. COCO's 32 "sports ball") passes
    what it knew about that class on: with one class, whose class column gets no loss, its
    logit is added to the objectness logit (score obj x cls becomes one logit: for small
    probabilities sigmoid(a + b) ~ sigmoid(a) sigmoid(b)), so the new detector starts out
    as that class's detector rather than a detector of any COCO object; with several
    classes, every new class row starts as that class's row.

    Which pretrained Detect conv a level inherits from is found by `detection_sources`: with
    `source_config` (the pretrained model's config), the one reading the same feature row, so a
    model with more levels or its Detect on another row (`yolov5n-p2`: row 28 reading rows 27,
    17, 20, 23 where COCO's row 24 reads 17, 20, 23) still gets COCO's P3-P5 rows, and a level
    the pretrained head lacks keeps its bias prior; without it, the level of the same index.

    Both need the coupled `Detect`: another detection head (`DecoupledDetect`) has no such rows,
    its new layers start from their own initialisation, and `seed_class` is refused.
    """
    detect = getattr(model, "detect", None)
    if seed_class is not None and not isinstance(detect, Detect):
        raise ConfigError(
            f"class_init: {seed_class} starts the new detector from that class's rows of the pretrained "
            f"Detect 1x1 convolutions, which only a Detect head has; this model's detection head is "
            f"{type(detect).__name__} (objectness and classes from separate branches): remove class_init")
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    skipped = sorted(k for k in own if k not in matched)
    if isinstance(detect, Detect):
        prefix = _module_name(model, detect)
        sources = detection_sources(prefix, detect, source_config)
        _inherit_box_and_objectness(detect, prefix, sources, state, skipped)
        if seed_class is not None:
            _seed_from_class(detect, sources, state, seed_class)
    return len(matched), skipped


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def new_detection_strides(model: YoloModel, source_config: dict[str, Any]) -> list[int]:
    """Strides of the Detect levels that inherit nothing from a pretrained model of `source_config`
    (they start from YOLOv5's bias prior): what the training source names next to the tensor count."""
    detect = model.detect
    if not isinstance(detect, Detect):
        return []
    sources = detection_sources(_module_name(model, detect), detect, source_config)
    return [int(stride) for stride, source in zip(detect.stride.tolist(), sources) if source is None]


def _absolute_rows(module: nn.Module) -> list[int]:
    """The rows a head reads, as absolute indices (`from` may say -1 for the row before)."""
    rows = module.f if isinstance(module.f, (list, tuple)) else [module.f]
    return [r if r >= 0 else module.i + r for r in rows]


def detection_sources(prefix: str, detect: Detect, source_config: dict[str, Any] | None) -> list[str | None]:
    """Per level of `detect`, the state-dict prefix of the pretrained Detect conv it inherits from
    (`model.24.m.0`), or None where the pretrained head has no level on that feature row (a new
    level, such as P2 on COCO's weights: it keeps YOLOv5's bias prior).

    With `source_config`, the pretrained head is found in its rows (built, not run) and levels pair
    up by the feature row they read; without it, the pretrained head is taken to sit where this
    one does, with the same levels. `prefix` is `detect`'s own name in its model (`model.28`)."""
    if source_config is None:
        return [f"{prefix}.m.{level}" for level in range(detect.nl)]
    layers, _ = parse_rows(source_config)
    heads = [m for m in layers if isinstance(m, DetectionHead)]
    if not heads:
        return [None] * detect.nl
    source_rows = _absolute_rows(heads[0])
    root = prefix.rsplit(".", 1)[0]  # "model": rows are named model.<index> in both
    return [f"{root}.{heads[0].i}.m.{source_rows.index(row)}" if row in source_rows else None
            for row in _absolute_rows(detect)]


@torch.no_grad()
def _inherit_box_and_objectness(detect: Detect, prefix: str, sources: list[str | None],
                                state: dict[str, torch.Tensor], skipped: list[str]) -> None:
    for level, (conv, source_prefix) in enumerate(zip(detect.m, sources)):
        for kind in ("weight", "bias"):
            source = state.get(f"{source_prefix}.{kind}") if source_prefix else None
            if source is None or f"{prefix}.m.{level}.{kind}" not in skipped:
                continue
            if source.shape[0] % detect.na or source.shape[1:] != getattr(conv, kind).shape[1:]:
                continue
            source_no = source.shape[0] // detect.na
            if source_no < 5:
                continue
            target = getattr(conv, kind).view(detect.na, detect.no, *source.shape[1:])
            target[:, :5] = source.view(detect.na, source_no, *source.shape[1:])[:, :5]


@torch.no_grad()
def _seed_from_class(detect: Detect, sources: list[str | None], state: dict[str, torch.Tensor],
                     source_class: int) -> None:
    if not any(sources):
        raise WeightsError("class_init: the pretrained detector has no level on the feature rows this model's "
                           "Detect reads")
    for conv, source_prefix in zip(detect.m, sources):
        if source_prefix is None:  # a level the pretrained detector lacks keeps its prior
            continue
        for kind in ("weight", "bias"):
            key = f"{source_prefix}.{kind}"
            if key not in state:
                raise WeightsError(f"class_init: the pretrained weights have no detection layer {key}")
            source = state[key]
            source_no = source.shape[0] // detect.na
            if not 0 <= source_class < source_no - 5:
                raise WeightsError(f"class_init: {source_class} is not a class of the pretrained detector "
                                   f"(it has {source_no - 5})")
            rows = source.view(detect.na, source_no, *source.shape[1:])
            target = getattr(conv, kind).view(detect.na, detect.no, *source.shape[1:])
            if detect.nc == 1:
                target[:, 4] = rows[:, 4] + rows[:, 5 + source_class]
            else:
                target[:, 5:] = rows[:, 5 + source_class].unsqueeze(1)


def build_training_model(weights: str | None, architecture: str | None, names: list[str],
                         seed_class: int | None = None, act: str | None = None,
                         frozen: str | None = None) -> tuple[YoloModel, str]:
    """The model to train: architecture from `architecture` if given, else from the weights;
    `len(names)` detection classes; `act` (if given) as the activation of every convolution;
    pretrained tensors transferred where they fit (and the pretrained class `seed_class` passed
    on to the new classes, see `transfer_weights`).

    Activations carry no weights, so SiLU weights (COCO's) load tensor for tensor into a ReLU
    model; the source then says so. What stays `frozen` (in words: "the detector") then keeps
    weights trained for another activation, which is allowed (it is an experiment) but warned about."""
    state: dict[str, torch.Tensor] = {}
    config: dict[str, Any] | None = load_model_config(architecture) if architecture else None
    weights_act: str | None = None
    source = "scratch"
    if weights:
        path = resolve_weights(weights)
        if path.suffix == ".safetensors":
            checkpoint = load_checkpoint(path)
            state, weights_config = checkpoint.model.state_dict(), checkpoint.metadata["config"]
        elif path.suffix in (".pt", ".pth"):
            imported = import_official(path)
            state, weights_config = imported.state_dict, imported.config
        else:
            raise WeightsError(f"{path}: unknown weights format (expected .pt or .safetensors)")
        config = config or weights_config
        weights_act = config_activation(weights_config)
        source = path.name
    if config is None:
        raise WeightsError("no architecture: give a model config or pretrained weights")
    model = YoloModel(config, nc=len(names), names=names, act=act)
    if seed_class is not None and not state:
        raise WeightsError("class_init needs pretrained weights whose class it starts from")
    if state:
        count, skipped = transfer_weights(model, state, seed_class, weights_config)
        source = f"{source} ({count}/{len(model.state_dict())} tensors; new: {len(skipped)})"
        fresh = new_detection_strides(model, weights_config)
        if fresh:
            source += f"; new detection level at stride {', '.join(map(str, fresh))} (bias prior)"
    if weights_act is not None and weights_act != model.act:
        source = f"{source}; activation {weights_act} -> {model.act}"
        if frozen:
            warnings.warn(f"{frozen} stays frozen with weights trained for {weights_act} but now runs with "
                          f"{model.act}: it cannot adapt to the new activation", stacklevel=2)
    return model, source


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state into tensors (for safetensors) and JSON-able metadata."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, extra: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in extra.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            per_param.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})


def save_training_state(path: Path, ema_model: YoloModel, model: nn.Module, optimizer: torch.optim.Optimizer,
                        metadata: dict[str, Any], terms: dict[str, torch.Tensor] | None = None) -> Path:
    """`last`: the EMA model as the checkpoint's model (what `load_model` reads), plus the raw student
    (`train/`), the loss terms' own tensors (`terms/`, e.g. adapters) and the optimizer state."""
    tensors, optim_meta = optimizer_tensors(optimizer)
    extra = {f"train/{k}": v for k, v in model.state_dict().items()}
    extra.update({f"terms/{k}": v for k, v in (terms or {}).items()})
    extra.update(tensors)
    return save_checkpoint(path, ema_model, {**metadata, "optimizer": optim_meta}, extra=extra)
