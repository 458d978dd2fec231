"""Which install provides which module: the runtime install (`pip install mhyolo`: NumPy, OpenCV and an
exported model's runtime) predicts with `.onnx`, OpenVINO and `.rknn` files; training, scoring and
exporting need the training install (`pip install 'mhyolo[train]'`). A command that reaches a module
its install lacks is answered with the install to use instead of an import traceback."""

from __future__ import annotations

TRAIN_EXTRA = "train"
# top-level module -> the extra that installs it
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "torchvision", "timm", "albumentations", "matplotlib", "faster_coco_eval", "scipy",
                     "imagehash", "PIL", "safetensors", "ensemble_boxes", "shapely"), TRAIN_EXTRA),
    **dict.fromkeys(("onnx", "onnxslim", "nncf"), "deploy"),
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}


def install_hint(missing: str | None) -> str | None:
    """What to install for the missing module `missing` (dotted names allowed), None when it is not one
    of an extra's."""
    root = (missing or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    what = "PyTorch and the training tools" if extra == TRAIN_EXTRA else f"'{root}'"
    return f"this needs {what}, which this install lacks (no module '{root}'): pip install 'mhyolo[{extra}]'"
