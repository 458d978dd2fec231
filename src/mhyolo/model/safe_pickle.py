"""Read YOLOv5 `.pt` checkpoints without running any code from the file.

Those files pickle whole `models.yolo.Model` (v6.x) or `DetectionModel` (v7.0)
objects, and the ones `train.py` writes add its arguments (paths, numpy numbers).
`torch.load` would import the YOLOv5 source and execute whatever the pickle names.
Instead, every name the pickle references is looked up in an allow-list: YOLOv5 and
torch.nn module classes become inert `Stub` objects that only record their state,
tensors are rebuilt from the raw storage bytes, paths and numpy values by the
checked rebuilders of `pickled_values`, and anything else (`os.system`,
`builtins.eval`, ...) is refused with an error that names it. Nothing in the file
is called.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mhyolo.errors import UnsafePickleError, WeightsError
from mhyolo.model import pickled_values as values

# Storage class names (as pickled by torch) -> tensor dtype.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}

# Module prefixes whose classes may appear as (inert) object types in a checkpoint.
STUB_MODULE_PREFIXES = ("models.", "utils.", "torch.nn.modules.")
SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "dict": dict, "list": list, "tuple": tuple, "slice": slice,
                 "complex": complex, "float": float, "int": int, "bool": bool, "str": str, "bytes": bytes}


class Stub:
    """Stand-in for any allowed class: remembers the pickled state, has no behaviour."""

    stub_name = "Stub"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__["_state"] = state if isinstance(state, dict) else {"_value": state}

    @property
    def state(self) -> dict[str, Any]:
        return self.__dict__.get("_state", {})


_STUB_CLASSES: dict[str, type[Stub]] = {}


def _stub_class(qualified: str) -> type[Stub]:
    if qualified not in _STUB_CLASSES:
        _STUB_CLASSES[qualified] = type(qualified.rsplit(".", 1)[-1], (Stub,), {"stub_name": qualified})
    return _STUB_CLASSES[qualified]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_ignored: Any) -> torch.Tensor:
    return torch.as_strided(storage, size, stride, offset).clone()


def _rebuild_parameter(data: torch.Tensor, *_ignored: Any) -> torch.Tensor:
    return data


# Every callable a checkpoint may name, and why calling it is inert.
SAFE_FUNCTIONS: dict[tuple[str, str], Any] = {
    # tensors: views of storage bytes already read from the archive
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): dict,
    ("torch", "Size"): tuple,
    # protocol-2 pickles store bytes as latin1 text (text only, to latin1 only)
    ("_codecs", "encode"): values.latin1_bytes,
    # train.py's `opt`: paths become strings (pure classes: nothing touches the file system)
    ("pathlib", "PosixPath"): values.posix_path,
    ("pathlib", "WindowsPath"): values.windows_path,
    ("pathlib._local", "PosixPath"): values.posix_path,  # the module name Python 3.13 pickles
    ("pathlib._local", "WindowsPath"): values.windows_path,
    # numpy numbers (best_fitness, ...): raw bytes of plain number dtypes only
    ("numpy", "dtype"): values.numpy_dtype,
    ("numpy", "ndarray"): values.NumpyArrayName,
    ("numpy.core.multiarray", "scalar"): values.numpy_scalar,
    ("numpy._core.multiarray", "scalar"): values.numpy_scalar,  # numpy 2 names
    ("numpy.core.multiarray", "_reconstruct"): values.numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): values.numpy_reconstruct,
}

# Classes outside the stub prefixes that become stubs too (they only carry a __dict__ of plain values).
STUB_CLASSES = {("argparse", "Namespace")}

# Packages whose checkpoints are recognised but cannot be loaded, and what to do instead.
FOREIGN_PACKAGES = {
    "ultralytics": (
        "an ultralytics 8.x checkpoint (it pickles '{name}'): YOLOv8, YOLOv5u and later models end in the "
        "anchor-free ultralytics Detect head (DFL box regression), which is not supported: mhyolo builds the "
        "anchor-based YOLOv5 head. Use a checkpoint written by the YOLOv5 repository (v6.x/v7.0 train.py), "
        "or train one with `mhyolo train --weights yolov5n.pt`"
    ),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves names only through the allow-lists above."""

    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file, encoding="latin1")
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if (module, name) in SAFE_FUNCTIONS:
            return SAFE_FUNCTIONS[(module, name)]
        if module == "builtins" and name in SAFE_BUILTINS:
            return SAFE_BUILTINS[name]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if (module, name) in STUB_CLASSES or (module.startswith(STUB_MODULE_PREFIXES) and name[:1].isupper()):
            return _stub_class(f"{module}.{name}")
        foreign = FOREIGN_PACKAGES.get(module.split(".", 1)[0])
        if foreign is not None:
            raise WeightsError(foreign.format(name=f"{module}.{name}"))
        raise UnsafePickleError(f"refuses to load '{module}.{name}': not on the allow-list "
                                f"of a model checkpoint (the file may be malicious or not a YOLOv5 checkpoint)")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise UnsafePickleError(f"unexpected storage type {dtype!r}")
        try:
            raw = self._archive.read(f"{self._prefix}data/{key}")
        except KeyError as exc:
            raise WeightsError(f"storage '{key}' missing from the archive (truncated file?)") from exc
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype)


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint into plain data, stubs and tensors."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise WeightsError(f"{path}: the file is empty (0 bytes): download it again")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{path}: not a PyTorch zip checkpoint or truncated ({size} bytes): {exc}") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pickles:
            raise WeightsError(f"{path}: no data.pkl inside: not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            payload = archive.read(pickles[0])
            return RestrictedUnpickler(io.BytesIO(payload), archive, prefix).load()
        except WeightsError as exc:  # raised by the allow-list and the rebuilders, which do not know the file
            raise type(exc)(f"{path}: {exc}") from exc
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, RuntimeError, OSError,
                TypeError, AttributeError) as exc:
            raise WeightsError(f"{path}: corrupt or truncated checkpoint: {exc}") from exc


def module_state_dict(module: Stub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rebuild `state_dict()` from a stubbed nn.Module tree (parameters, then persistent buffers)."""
    state = module.state
    out: dict[str, torch.Tensor] = {}
    for name, value in (state.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in (state.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in non_persistent:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Stub):
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out
