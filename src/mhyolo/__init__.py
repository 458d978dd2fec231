"""mhyolo: one multi-head YOLOv5 model that finds objects and says what kind each one is.

    import mhyolo
    model = mhyolo.load("runs/demo/model.safetensors")   # or .pt, .onnx, .xml, .rknn
    for result in model.predict("photo.jpg"):
        print(result.boxes, result.types)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mhyolo.version import __version__

__all__ = ["Model", "Result", "load", "__version__"]

if TYPE_CHECKING:
    from mhyolo.api import Model, Result, load


def __getattr__(name: str) -> Any:
    """The API is imported on first use, so `import mhyolo` (and the command line) stays fast."""
    if name in ("Model", "Result", "load"):
        from mhyolo import api

        return getattr(api, name)
    raise AttributeError(f"module 'mhyolo' has no attribute {name!r}")
