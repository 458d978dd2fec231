"""The few array operations post-processing needs, in NumPy: what every runtime's outputs become.

Runtime outputs arrive as NumPy arrays (ONNX Runtime, OpenVINO, RKNN) or as tensors (the PyTorch
model, a hand-made backend); `as_numpy` is the one place a tensor is read back, by duck typing, so
nothing here needs PyTorch installed. Each function does the float32 arithmetic of the PyTorch /
torchvision operation it stands for, in the same order, so moving post-processing off PyTorch changes
no box (the type softmax alone differs in the last bit of some probabilities: NumPy's `exp` is not
PyTorch's).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(value: Any) -> np.ndarray:
    """`value` as a NumPy array without copying where possible: a tensor (any device) is detached and
    brought to the CPU first; its dtype is kept."""
    if hasattr(value, "detach"):  # a torch.Tensor, read without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities over `axis` in float32 (the largest logit subtracted first, as PyTorch does)."""
    logits = np.asarray(logits, np.float32)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of xyxy boxes `a` (n, 4) and `b` (m, 4), in their common dtype."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    sides = np.clip(bottom_right - top_left, 0, None)
    inter = sides[..., 0] * sides[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)
