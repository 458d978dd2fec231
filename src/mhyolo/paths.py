"""Where mhyolo looks for things outside the package (cache, shared data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache (weights, image hashes of earlier data builds): `$MHYOLO_HOME`, else `~/.cache/mhyolo`."""
    env = os.environ.get("MHYOLO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mhyolo"


def repo_root() -> Path:
    """The checkout this package was installed from (editable installs), else the CWD."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def shared_dir() -> Path:
    """`$MHYOLO_SHARED`; else `../shared` beside the checkout when it exists; else
    `$MHYOLO_HOME/shared` (where `mhyolo data fetch` puts it) when that exists; else `../shared`."""
    env = os.environ.get("MHYOLO_SHARED")
    if env:
        return Path(env).expanduser()
    beside = repo_root().parent / "shared"
    if beside.is_dir():
        return beside
    fetched = fetched_shared_dir()
    return fetched if fetched.is_dir() else beside


def fetch_destination() -> Path:
    """Where `mhyolo data fetch` writes by default: the shared folder mhyolo reads when there is
    one (`$MHYOLO_SHARED`, `../shared`), else `$MHYOLO_HOME/shared`, which `shared_dir` then finds."""
    current = shared_dir()
    return current if os.environ.get("MHYOLO_SHARED") or current.is_dir() else fetched_shared_dir()


def fetched_shared_dir() -> Path:
    """Where `mhyolo data fetch` puts weights/, images/ and data/ when no shared folder exists."""
    return cache_dir() / "shared"


def absolute_path(path: str | Path, base: Path | None = None) -> Path:
    """`path` made absolute (relative to `base`, default the CWD) without resolving symbolic links.

    YOLO finds a label from the image's path, so a linked image or folder must keep the name it
    was reached by; only the part up to the last `..` is resolved, because the system walks `..`
    from where a link points, not from where it sits. Compare files by `Path.resolve()` instead.
    """
    path = Path(path).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base).expanduser() / path
    if not path.is_absolute():
        path = Path.cwd() / path
    parts = path.parts
    if ".." not in parts:
        return path
    last = len(parts) - 1 - parts[::-1].index("..")
    return Path(*parts[:last + 1]).resolve().joinpath(*parts[last + 1:])
