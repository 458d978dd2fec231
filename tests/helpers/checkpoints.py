"""Checkpoints laid out like the ones YOLOv5's train.py and ultralytics 8.x write.

The classes those files pickle (`models.yolo.DetectionModel`, `models.common.Conv`,
`ultralytics.nn.tasks.DetectionModel`, ...) are declared at build time inside
throwaway modules registered in `sys.modules` under the real names, so `torch.save`
writes the same global references as the real files. The modules are removed
before the file is returned, so a loader cannot import them.

The YOLOv5 object graph is a copy of a real mhyolo model (whose layer attributes
already carry YOLOv5's names) with each block's class swapped for its YOLOv5 name
and the attributes YOLOv5 adds (`np`, Detect's `stride`/`grid`, the model's `hyp`,
`class_weights`, ...), in fp16 as train.py saves it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import pickletools
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from torch import nn

from mhyolo.model.heads import Detect
from mhyolo.model.layers import C3, SPPF, Bottleneck, Concat, Conv
from mhyolo.model.yolo import YoloModel

YOLOV5_NAMES: dict[type, str] = {
    Conv: "models.common.Conv", C3: "models.common.C3", Bottleneck: "models.common.Bottleneck",
    SPPF: "models.common.SPPF", Concat: "models.common.Concat", Detect: "models.yolo.Detect",
}
ULTRALYTICS_NAMES: dict[type, str] = {
    Conv: "ultralytics.nn.modules.conv.Conv", C3: "ultralytics.nn.modules.block.C3",
    Bottleneck: "ultralytics.nn.modules.block.Bottleneck", SPPF: "ultralytics.nn.modules.block.SPPF",
    Concat: "ultralytics.nn.modules.conv.Concat",
}
# train.py's hyperparameters (data/hyps/hyp.scratch-low.yaml), kept in `opt['hyp']` and `model.hyp`
HYP = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
       "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
       "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0, "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
       "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0, "flipud": 0.0,
       "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0, "label_smoothing": 0.0}
GIT = {"remote": "https://github.com/ultralytics/yolov5", "branch": "master",
       "commit": "915bbf294bb74c859f0b41f1c23bc395014ea679"}
DATE = "2024-03-05T14:07:31.402215"


class WindowsPathAsPickled(PureWindowsPath):
    """A Windows path that pickles as `pathlib.WindowsPath(*parts)`, as on the Windows machine that
    trained (instantiating the real WindowsPath on Linux raises)."""

    def __reduce__(self):
        import pathlib

        return pathlib.WindowsPath, self.parts


@contextlib.contextmanager
def fake_classes(names: dict[str, type]) -> Iterator[dict[str, type]]:
    """Classes `qualified name -> base` declared in fresh modules under their real names.

    Every module on the way (`models`, `models.common`, ...) is registered in `sys.modules`
    for the duration only; whatever was there before is put back."""
    saved: dict[str, types.ModuleType | None] = {}

    def module(name: str) -> types.ModuleType:
        if name not in saved:
            saved[name] = sys.modules.get(name)
            sys.modules[name] = types.ModuleType(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(module(parent), child, sys.modules[name])
        return sys.modules[name]

    classes = {}
    try:
        for qualified, base in names.items():
            module_name, _, class_name = qualified.rpartition(".")
            cls = type(class_name, (base,), {"__module__": module_name, "__qualname__": class_name})
            setattr(module(module_name), class_name, cls)
            classes[qualified] = cls
        yield classes
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _qualified(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _swap_classes(model: YoloModel, names: dict[type, str], classes: dict[str, type]) -> nn.Module:
    """An fp16 copy of `model` whose blocks carry the given class names, with YOLOv5's per-layer attributes."""
    clone = copy.deepcopy(model).half()
    for module in clone.modules():
        if type(module) in names:
            module.__class__ = classes[names[type(module)]]
    for layer in clone.model:
        layer.type = _qualified(layer)  # parse_model: m_.type = str(m)[8:-2]
        layer.np = sum(p.numel() for p in layer.parameters())
    for attribute in ("trained_imgsz", "type_names"):
        clone.__dict__.pop(attribute, None)
    return clone


def yolov5_model(model: YoloModel, classes: dict[str, type], model_class: str, names_as_dict: bool) -> nn.Module:
    """`model` as the object YOLOv5's train.py pickles (`models.yolo.Model` or `DetectionModel`)."""
    clone = _swap_classes(model, YOLOV5_NAMES, classes)
    detect = clone.model[-1]
    stride = detect._buffers.pop("stride")  # YOLOv5 keeps the strides as a plain attribute
    detect._non_persistent_buffers_set.discard("stride")
    detect.stride = stride
    detect.grid = [torch.empty(0) for _ in range(detect.nl)]
    detect.anchor_grid = [torch.empty(0) for _ in range(detect.nl)]
    detect.inplace = True
    clone.__class__ = classes[model_class]
    clone.yaml = {**clone.yaml, "ch": 3}
    clone.yaml_file = "yolov5n.yaml"
    clone.inplace = True
    clone.stride = stride.float()
    clone.nc = detect.nc
    clone.names = dict(enumerate(model.names)) if names_as_dict else list(model.names)
    clone.hyp = dict(HYP)
    clone.class_weights = torch.linspace(0.5, 2.0, detect.nc, dtype=torch.float64)
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


def sgd_state(model: YoloModel) -> dict:
    """`optimizer.state_dict()` of train.py's SGD (three groups, momentum buffers after a step)."""
    model = copy.deepcopy(model).train()
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    bn_weights = [p for n, p in model.named_parameters() if ".bn." in n and n.endswith(".weight")]
    weights = [p for n, p in model.named_parameters() if n.endswith(".weight") and ".bn." not in n]
    optimizer = torch.optim.SGD(biases, lr=HYP["lr0"], momentum=HYP["momentum"], nesterov=True)
    optimizer.add_param_group({"params": weights, "weight_decay": HYP["weight_decay"]})
    optimizer.add_param_group({"params": bn_weights, "weight_decay": 0.0})
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 1e-3)
    optimizer.step()
    for group in optimizer.param_groups:
        group["initial_lr"] = HYP["lr0"]  # added by train.py's LambdaLR scheduler
    return optimizer.state_dict()


def train_opt(windows: bool) -> dict:
    """`vars(opt)` of YOLOv5 v7.0 train.py, with the paths it keeps as pathlib objects."""
    if windows:
        root, path = "C:\\Users\\user\\yolov5", WindowsPathAsPickled
    else:
        root, path = "/home/user/yolov5", PurePosixPath
    concrete = path if windows else Path  # on Linux, train.py's paths are PosixPath
    data = str(path(root, "data", "balls.yaml"))
    return {"weights": "yolov5n.pt", "cfg": "", "data": data, "hyp": dict(HYP), "epochs": 100, "batch_size": 16,
            "imgsz": 640, "rect": False, "resume": False, "nosave": False, "noval": False, "noautoanchor": False,
            "noplots": False, "evolve": None, "evolve_population": concrete(root, "data", "hyps"),
            "resume_evolve": None, "bucket": "", "cache": None, "image_weights": False, "device": "",
            "multi_scale": False, "single_cls": False, "optimizer": "SGD", "sync_bn": False, "workers": 8,
            "project": str(path(root, "runs", "train")), "name": "exp", "exist_ok": False, "quad": False,
            "cos_lr": False, "label_smoothing": 0.0, "patience": 100, "freeze": [0], "save_period": -1, "seed": 0,
            "local_rank": -1, "entity": None, "upload_dataset": False, "bbox_interval": -1,
            "artifact_alias": "latest", "ndjson_console": False, "ndjson_file": False,
            "save_dir": concrete(root, "runs", "train", "exp")}


def write_yolov5_checkpoint(path: Path, weights: YoloModel, *, version: str = "7.0", stripped: bool = True,
                            windows: bool = False, numpy1: bool = False,
                            training_weights: YoloModel | None = None) -> Path:
    """A `best.pt`/`last.pt` as YOLOv5's train.py writes it.

    version: "7.0" pickles `models.yolo.DetectionModel`, class names as a dict, `opt` as a dict and `git`;
        "6.x" pickles `models.yolo.Model`, names as a list, `wandb_id`, and `opt` as an argparse.Namespace.
    stripped: as after `strip_optimizer` (best.pt): `model` holds the EMA weights, `ema`/`optimizer`/
        `best_fitness`/`updates` are None, epoch -1. Otherwise (last.pt during training) `ema` holds
        `weights`, `model` holds `training_weights`, with the optimizer state and a numpy fitness
        (an array in 7.0, a numpy scalar in 6.x).
    numpy1: name numpy's functions as numpy 1.x does (`numpy.core.multiarray`) rather than 2.x.
    """
    model_class = "models.yolo.DetectionModel" if version == "7.0" else "models.yolo.Model"
    with fake_classes({name: nn.Module for name in [*YOLOV5_NAMES.values(), model_class]}) as classes:
        ema = yolov5_model(weights, classes, model_class, names_as_dict=version == "7.0")
        opt = train_opt(windows)
        if stripped:
            checkpoint = {"epoch": -1, "best_fitness": None, "model": ema, "ema": None, "updates": None,
                          "optimizer": None}
        else:
            raw = yolov5_model(training_weights or weights, classes, model_class, names_as_dict=version == "7.0")
            fitness = np.array([0.41372]) if version == "7.0" else np.float64(0.41372)
            checkpoint = {"epoch": 41, "best_fitness": fitness, "model": raw, "ema": ema, "updates": 2184,
                          "optimizer": sgd_state(training_weights or weights)}
        if version == "7.0":
            checkpoint.update({"opt": opt, "git": dict(GIT), "date": DATE})
        else:
            checkpoint.update({"wandb_id": None, "opt": argparse.Namespace(**opt), "date": DATE})
        torch.save(checkpoint, path)
    if numpy1:
        rename_pickled_globals(path, {"numpy._core.multiarray": "numpy.core.multiarray"})
    return path


def write_ultralytics_checkpoint(path: Path, weights: YoloModel, *, family: str = "yolov5u",
                                 stripped: bool = True) -> Path:
    """A checkpoint as ultralytics 8.x writes it: `ultralytics.nn.tasks.DetectionModel` ending in the
    anchor-free Detect head (cv2 box branch with 4*reg_max outputs, cv3 class branch, DFL).

    family "yolov8" names its CSP blocks `C2f` (the class name is all that differs for a loader)."""
    reg_max, nc = 16, len(weights.names)
    names = dict(ULTRALYTICS_NAMES)
    if family == "yolov8":
        names[C3] = "ultralytics.nn.modules.block.C2f"
    head_names = ["ultralytics.nn.tasks.DetectionModel", "ultralytics.nn.modules.head.Detect",
                  "ultralytics.nn.modules.block.DFL"]
    declared = {name: nn.Module for name in [*names.values(), *head_names]}
    declared["ultralytics.utils.IterableSimpleNamespace"] = types.SimpleNamespace
    with fake_classes(declared) as classes:
        model = _swap_classes(weights, names, classes)
        old = model.model[-1]
        conv = classes["ultralytics.nn.modules.conv.Conv"]

        def block(c1: int, c2: int) -> nn.Module:
            layer = conv()
            layer.conv, layer.bn, layer.act = nn.Conv2d(c1, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU()
            return layer

        channels = [m.in_channels for m in old.m]
        c2, c3 = max(16, channels[0] // 4, reg_max * 4), max(channels[0], min(nc, 100))
        head = classes["ultralytics.nn.modules.head.Detect"]()
        head.nc, head.nl, head.reg_max, head.no = nc, len(channels), reg_max, nc + reg_max * 4
        head.stride = old.stride.clone()
        head.cv2 = nn.ModuleList(nn.Sequential(block(c, c2), block(c2, c2), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for c in channels)
        head.cv3 = nn.ModuleList(nn.Sequential(block(c, c3), block(c3, c3), nn.Conv2d(c3, nc, 1)) for c in channels)
        head.dfl = classes["ultralytics.nn.modules.block.DFL"]()
        head.dfl.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        head.dfl.c1 = reg_max
        head.dynamic, head.export, head.shape = False, False, None
        head.anchors, head.strides = torch.empty(0), torch.empty(0)
        head.f, head.i, head.type, head.np = old.f, old.i, _qualified(head), sum(p.numel() for p in head.parameters())
        model.model[-1] = head.half()
        model.__class__ = classes["ultralytics.nn.tasks.DetectionModel"]
        model.yaml = {**model.yaml, "ch": 3, "yaml_file": f"{family}n.yaml"}
        model.names = dict(enumerate(weights.names))
        model.stride = head.stride.float()
        model.task = "detect"
        train_args = {"task": "detect", "mode": "train", "model": f"{family}n.pt", "data": "balls.yaml",
                      "epochs": 100, "imgsz": 640, "batch": 16, "save_dir": "runs/detect/train"}
        if stripped:
            model.args = dict(train_args)
            checkpoint = {"date": DATE, "version": "8.3.40",
                          "license": "AGPL-3.0 License (https://ultralytics.com/license)",
                          "docs": "https://docs.ultralytics.com", "epoch": -1, "best_fitness": None, "model": model,
                          "ema": None, "updates": None, "optimizer": None}
        else:
            model.args = classes["ultralytics.utils.IterableSimpleNamespace"](**train_args)
            checkpoint = {"epoch": 12, "best_fitness": np.float64(0.512), "model": None, "ema": model,
                          "updates": 880, "optimizer": None, "date": DATE, "version": "8.3.40"}
        checkpoint.update({"train_args": train_args, "train_metrics": {"metrics/mAP50(B)": 0.61, "fitness": 0.512},
                           "train_results": {"epoch": [1, 2], "metrics/mAP50(B)": [0.4, 0.61]}})
        torch.save(checkpoint, path)
    return path


# ------------------------------------------------------------------ inspection
def pickle_payload(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
        return archive.read(name)


def pickled_globals(path: Path) -> set[str]:
    """Every `module.name` a checkpoint's pickle references (GLOBAL, and STACK_GLOBAL with the two
    strings pushed just before it), read with pickletools: nothing is imported or run."""
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(pickle_payload(path)):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            found.add(f"{module}.{name}")
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(arg, str) and "UNICODE" in opcode.name:
            strings.append(arg)
    return found


def rename_pickled_globals(path: Path, renames: dict[str, str]) -> None:
    """Rewrite GLOBAL opcodes (`c<module>\\n<name>\\n`) in place: a key names a module ("numpy._core.multiarray",
    every name in it) or one global ("models.yolo Detect"). Used for what a file written with other library
    versions, or by another YOLOv5 task, names. Checks every occurrence replaced is a GLOBAL."""
    payload = pickle_payload(path)
    for old, new in renames.items():
        whole = " " in old
        globals_named = sum(1 for op, arg, _ in pickletools.genops(payload)
                            if op.name == "GLOBAL" and (arg if whole else arg.split(" ", 1)[0]) == old)
        pattern = b"c" + old.replace(" ", "\n").encode() + b"\n"
        assert globals_named and payload.count(pattern) == globals_named, (old, globals_named)
        payload = payload.replace(pattern, b"c" + new.replace(" ", "\n").encode() + b"\n")
    _replace_members(path, lambda name, data: payload if name.endswith("data.pkl") else data)


def _replace_members(path: Path, transform) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, transform(name, data))
    path.write_bytes(buffer.getvalue())
