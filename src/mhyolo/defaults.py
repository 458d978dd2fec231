"""The training settings shipped inside the package, found by name.

A wheel holds no `configs/` folder, so the settings every pipeline stage starts from
(`hyp`, `head`, `joint`, `multihead`) live in `mhyolo/configs/` and are named, not
located: `--hyp multihead` or `hyp: multihead` in a pipeline file works from any folder
and any install. A value that names an existing file is that file, so a user's own copy
(the repository's `configs/` holds examples) always wins.

It also holds the defaults every layer shares: the predict score threshold, the default
input size, and the check that an input size fits the model's stride.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mhyolo.errors import ConfigError

PREDICT_CONF = 0.25  # `mhyolo predict`'s default --conf: the scores a user sees
DEFAULT_IMGSZ = 640  # the input size when neither the user nor the model names one


def check_stride_multiple(size: int, stride: int, what: str) -> None:
    """Refuse an input `size` that is not a positive multiple of the model's largest `stride`;
    `what` names it in the message ('image size', 'export size', '--imgsz')."""
    if size <= 0 or size % stride:
        raise ConfigError(f"{what} {size} must be a positive multiple of the model stride {stride}")


def _shipped_dir() -> Path:
    return Path(str(resources.files("mhyolo") / "configs"))


def shipped_training_files() -> dict[str, Path]:
    """Every shipped training settings file by name (`multihead` -> .../mhyolo/configs/multihead.yaml)."""
    return {path.stem: path for path in sorted(_shipped_dir().glob("*.yaml"))}


def path_or_shipped(value: str | Path, shipped: dict[str, Path], what: str,
                    base_dirs: tuple[Path, ...] = ()) -> Path:
    """A file or the name of a shipped one, the file first: `value` as a path (absolute, from the
    working directory, or from one of `base_dirs`) when that file exists, else the entry of
    `shipped` (name -> file) it names (with or without `.yaml`), else a `ConfigError` that says
    where it looked and lists the shipped names. `what` names the value in that message."""
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(base / path for base in base_dirs)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    name = path.name[:-5] if path.name.endswith(".yaml") and path.parent == Path(".") else str(value)
    if name in shipped:
        return shipped[name]
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{what} '{value}': no such file (looked at {looked}) and not a shipped name "
                      f"({', '.join(shipped)})")


def training_file(value: str | Path, base_dirs: tuple[Path, ...] = ()) -> Path:
    """A training YAML: a file (absolute, from the working directory, or from one of `base_dirs`),
    else the name of a shipped one (with or without `.yaml`)."""
    return path_or_shipped(value, shipped_training_files(), "training settings", base_dirs)

NPU_CORE_WORDS = ("auto", "0", "1", "2", "all")  # `--npu-cores` on a Rockchip board: the driver's choice, one core, all three

# OpenVINO's CPU arithmetic a user may ask for: "auto" is f32 for a float model (what accuracy checks
# need) and the plugin's own default for an INT8 one (infer/backends/openvino_backend.py says why).
OPENVINO_PRECISIONS = ("auto", "f32", "bf16", "f16")
