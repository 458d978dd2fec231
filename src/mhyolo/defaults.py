"""The training settings shipped inside the package, found by name.

A wheel holds no `configs/` folder, so the settings every pipeline stage starts from
(`hyp`, `head`, `joint`, `multihead`) live in `mhyolo/configs/` and are named, not
located: `--hyp multihead` or `hyp: multihead` in a pipeline file works from any folder
and any install. A value that names an existing file is that file, so a user's own copy
(the repository's `configs/` holds examples) always wins.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mhyolo.errors import ConfigError


def _shipped_dir() -> Path:
    return Path(str(resources.files("mhyolo") / "configs"))


def shipped_training_files() -> dict[str, Path]:
    """Every shipped training settings file by name (`multihead` -> .../mhyolo/configs/multihead.yaml)."""
    return {path.stem: path for path in sorted(_shipped_dir().glob("*.yaml"))}


def training_file(value: str | Path, base_dirs: tuple[Path, ...] = ()) -> Path:
    """A training YAML: a file (absolute, from the working directory, or from one of `base_dirs`),
    else the name of a shipped one (with or without `.yaml`)."""
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(base / path for base in base_dirs)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = shipped_training_files()
    name = path.name[:-5] if path.name.endswith(".yaml") and path.parent == Path(".") else str(value)
    if name in shipped:
        return shipped[name]
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"training settings '{value}': no such file (looked at {looked}) and not a shipped name "
                      f"({', '.join(shipped)})")
