"""Whether a model layer is registered whatever module is imported first, checked in a fresh
interpreter (this one has imported everything already)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable


def assert_layers_registered_after(module: str, layers: Iterable[str]) -> None:
    """In a new process: `import module` alone registers every name in `layers`."""
    names = sorted(layers)
    assert names, "name at least one layer"
    code = (f"import {module}\nfrom mhyolo.model.registry import LAYER_BUILDERS\n"
            f"missing = set({names!r}) - set(LAYER_BUILDERS)\n"
            "assert not missing, (sorted(missing), sorted(LAYER_BUILDERS))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)  # pytest-xdist talks to its workers over stdin
    assert result.returncode == 0, result.stderr
