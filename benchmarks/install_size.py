"""On-disk size of each install of mhyolo, read from the installed distributions of this environment.

    python benchmarks/install_size.py

The runtime install (`pip install 'mhyolo[onnxruntime]'`, `[openvino]`, or both) against the training
install (`[train]`, what `make demo` adds): each row sums the files of every distribution its
requirements pull in (pyproject.toml's lists, followed through each distribution's own requirements),
so a row is what a fresh virtual environment would hold, without pip and the interpreter.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.wheel import closure, project_requirements  # noqa: E402  - one reading of pyproject.toml

INSTALLS = {
    "runtime: ONNX Runtime": ("onnxruntime",),
    "runtime: OpenVINO": ("openvino",),
    "runtime: both": ("onnxruntime", "openvino"),
    "training (make demo: train, deploy)": ("train", "deploy"),
}


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        distribution = metadata.distribution(name)
        for file in distribution.files or []:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6


def main() -> None:
    print("| install | distributions | MB on disk | largest three |")
    print("|---|---|---|---|")
    for label, extras in INSTALLS.items():
        names = closure(project_requirements(extras))
        largest = sorted(names, key=lambda n: -size_mb({n}))[:3]
        print(f"| {label} | {len(names)} | {size_mb(names):.0f} | "
              + ", ".join(f"{n} {size_mb({n}):.0f}" for n in largest) + " |")


if __name__ == "__main__":
    main()
