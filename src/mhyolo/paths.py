"""Where mhyolo looks for things outside the package (cache, shared data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The weights cache: `$MHYOLO_HOME`, else `~/.cache/mhyolo`."""
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
    """`$MHYOLO_SHARED`, else `../shared` beside the checkout."""
    env = os.environ.get("MHYOLO_SHARED")
    return Path(env).expanduser() if env else repo_root().parent / "shared"
