"""Fresh virtual environments holding the built wheel of this checkout (not the editable install),
with the packages they may import taken from the current environment, so nothing is downloaded:
all of them (`current_environment`), or only the distributions a set of requirements pulls in
(`only_distributions`: the runtime install, which must work without PyTorch)."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def run(command: list[str], cwd: Path, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    """`command`'s result; its exit status must be `expect` (None: any)."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if expect is not None:
        assert result.returncode == expect, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


def wheel_venv(work: Path) -> tuple[Path, Path]:
    """A venv under `work` with only the wheel built from this checkout installed (no dependencies):
    (the environment, its site-packages)."""
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(work / "dist"), str(source)], cwd=work)
    wheels = list((work / "dist").glob("mhyolo-*.whl"))
    assert len(wheels) == 1, wheels
    env = work / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=work)
    python = env / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheels[0])], cwd=work)
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=work).stdout.strip())
    return env, purelib


def current_environment(purelib: Path) -> None:
    """Make every package of the running environment importable there (a path file)."""
    # Plain directories, not site dirs: the editable install's own path file in them is not processed.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (purelib / "current_environment.pth").write_text("\n".join(sorted(ours)) + "\n")


def project_requirements(extras: Iterable[str] = ()) -> list[str]:
    """The checkout's `[project] dependencies` and those of `extras`, as pyproject.toml declares them (on
    Python 3.10, without `tomllib`, as the installed checkout's metadata repeats them)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        return _installed_requirements(extras)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        found += project["optional-dependencies"][extra]
    return found


def _installed_requirements(extras: Iterable[str]) -> list[str]:
    environment = default_environment()
    found = []
    for text in metadata.requires("mhyolo") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({**environment, "extra": e}) for e in extras):
            requirement.marker = None
            found.append(str(requirement))
    return found


def closure(requirements: Iterable[str]) -> set[str]:
    """The installed distributions `requirements` pull in, transitively (markers evaluated here; extras of
    the dependencies not followed), as normalised names."""
    environment = default_environment()
    todo, seen = [Requirement(r) for r in requirements], set()
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.distribution(name).requires or []]
    return seen


def only_distributions(purelib: Path, names: set[str], folder: Path) -> set[str]:
    """Make exactly the files of the distributions `names` importable there: their top-level entries
    linked into `folder`, which a path file adds. Returns the linked entries."""
    folder.mkdir()
    linked: set[str] = set()
    for name in names:
        distribution = metadata.distribution(name)
        base = Path(distribution.locate_file(""))
        for file in distribution.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top in linked or not (base / top).exists():
                continue
            (folder / top).symlink_to(base / top)
            linked.add(top)
    (purelib / "runtime_only.pth").write_text(f"{folder}\n")
    return linked
