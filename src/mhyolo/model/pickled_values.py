"""Inert rebuilders for the plain values a training checkpoint pickles besides the model.

YOLOv5's `train.py` saves its arguments (`opt`, holding `pathlib` paths, or an
`argparse.Namespace` in older files), its fitness (numpy scalars or arrays) and
git/date strings next to the weights. Each function here rebuilds one of those
from the arguments the pickle gives it, checks their types, and calls nothing
named by the file: a path becomes its string, numpy values are rebuilt from raw
bytes of a plain number type only (never `object`, whose bytes would be pointers).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from mhyolo.errors import UnsafePickleError

# numpy pickles a dtype as `numpy.dtype('f8', False, True)`: kind letter + item size.
_PLAIN_DTYPE = re.compile(r"[biufc][0-9]{1,2}")
_BYTE_ORDERS = ("<", ">", "|", "=")


def _path_parts(parts: tuple[Any, ...], kind: str) -> tuple[str, ...]:
    if not all(isinstance(part, str) for part in parts):
        raise UnsafePickleError(f"a pickled {kind} with non-text parts {parts!r}")
    return parts


def posix_path(*parts: Any) -> str:
    """`pathlib.PosixPath(*parts)` as its string (a path in a file says nothing about this machine)."""
    return str(PurePosixPath(*_path_parts(parts, "PosixPath")))


def windows_path(*parts: Any) -> str:
    """`pathlib.WindowsPath(*parts)` as its string: the pure class, since a WindowsPath
    cannot be instantiated on Linux."""
    return str(PureWindowsPath(*_path_parts(parts, "WindowsPath")))


def latin1_bytes(text: Any, encoding: Any) -> bytes:
    """`_codecs.encode(text, 'latin1')`: how protocol-2 pickles (torch.save's default) store bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is allowed only on text to latin1, got {type(text).__name__}, "
                                f"{encoding!r}")
    return text.encode("latin1")


class NumpyDType:
    """A pickled `numpy.dtype` of a plain number type. Its pickled state may only set the
    byte order: states that add fields or sub-arrays (which could hide `object`) are refused."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in _BYTE_ORDERS
                and state[2:5] == (None, None, None)):
            raise UnsafePickleError(f"numpy dtype state {state!r} is not that of a plain number type")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def numpy_dtype(name: Any, align: Any = False, copy: Any = False) -> NumpyDType:
    if not (isinstance(name, str) and _PLAIN_DTYPE.fullmatch(name)):
        raise UnsafePickleError(f"numpy dtype {name!r} is not a plain number type")
    return NumpyDType(np.dtype(name))


def numpy_scalar(dtype: Any, data: Any) -> int | float | complex | bool:
    """`numpy.core.multiarray.scalar(dtype, raw)` as a Python number."""
    if not (isinstance(dtype, NumpyDType) and isinstance(data, bytes) and len(data) == dtype.dtype.itemsize):
        raise UnsafePickleError("a numpy scalar that is not raw bytes of a plain number type")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


class NumpyArrayName:
    """Stands for the name `numpy.ndarray`, which a pickle may only pass to `_reconstruct`."""


class PickledArray(np.ndarray):
    """An ndarray rebuilt by `numpy.core.multiarray._reconstruct` + BUILD. Its `__setstate__`
    accepts only raw bytes of a plain number dtype (an `object` array pickles a list instead)."""

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("a numpy array state that is not (version, shape, dtype, fortran, bytes)")
        version, shape, dtype, fortran, raw = state
        if not (isinstance(dtype, NumpyDType) and isinstance(raw, bytes) and isinstance(shape, tuple)
                and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise UnsafePickleError("a numpy array that is not raw bytes of a plain number type")
        super().__setstate__((int(version), shape, dtype.dtype, bool(fortran), raw))


def numpy_reconstruct(subtype: Any, shape: Any, typecode: Any) -> PickledArray:
    """`numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`: an empty array that BUILD fills."""
    if subtype is not NumpyArrayName:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r}: only numpy.ndarray is allowed")
    return np.empty(0, dtype=np.uint8).view(PickledArray)
