"""A wheel install (not editable) runs from any folder: the stage defaults and architectures ship
inside the package, not in the repository's `configs/`."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding only the built wheel; the current environment's packages
    (torch and the rest) are reachable through a path file, so nothing is downloaded."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(work / "dist"), str(source)], cwd=work)
    wheels = list((work / "dist").glob("mhyolo-*.whl"))
    assert len(wheels) == 1, wheels
    env = work / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=work)
    python = env / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
          str(wheels[0])], cwd=work)
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=work).stdout.strip())
    # Plain directories, not site dirs: the editable install's own path file in them is not processed.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (purelib / "current_environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    return env


@pytest.mark.slow
def test_wheel_holds_the_defaults_and_runs_from_another_folder(wheel_env: Path, shared: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = _run([str(wheel_env / "bin" / "python"), "-c", "import mhyolo; print(mhyolo.__file__)"], cwd=elsewhere)
    assert Path(located.stdout.strip()).is_relative_to(wheel_env), located.stdout  # the wheel, not the checkout
    recipe = elsewhere / "my_recipe.yaml"
    recipe.write_text(f"classes: [basketball, football, tennis-ball]\nsources:\n"
                      f"  - path: {shared / 'data' / 'seed_balls'}\n"
                      f"    classes: {{basketball: basketball, football: football, tennis-ball: tennis-ball}}\n")
    plan = _run([str(wheel_env / "bin" / "mhyolo"), "pipeline", "--config", str(recipe), "--plan"], cwd=elsewhere)
    import yaml

    stages = yaml.safe_load(plan.stdout)
    assert list(stages) == ["detector", "head", "joint"]  # a bare recipe runs the default stages
    assert stages["detector"]["epochs"] == 100 and stages["detector"]["weights"] == "yolov5n.pt"  # shipped hyp
    assert stages["head"]["model"] == "yolov5n-typehead" and stages["head"]["freeze"] == "detector"
    assert stages["joint"]["optim"]["lr0"] == 0.001  # shipped joint settings
    assert stages["head"]["weights"].endswith("detector/weights/best.safetensors")
    built = _run([str(wheel_env / "bin" / "python"), "-c",
                  "from mhyolo.model.yolo import YoloModel; m = YoloModel('yolov5n-typehead-lite'); "
                  "print(sorted(m.heads))"], cwd=elsewhere)
    assert "type" in built.stdout
