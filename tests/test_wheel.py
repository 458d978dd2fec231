"""A wheel install (not editable) runs from any folder: the stage defaults and architectures ship
inside the package, not in the repository's `configs/`."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.wheel import current_environment, run, wheel_venv


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding only the built wheel; the current environment's packages
    (torch and the rest) are reachable through a path file, so nothing is downloaded."""
    env, purelib = wheel_venv(tmp_path_factory.mktemp("wheel"))
    current_environment(purelib)
    return env


@pytest.mark.slow
def test_wheel_holds_the_defaults_and_runs_from_another_folder(wheel_env: Path, shared: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = run([str(wheel_env / "bin" / "python"), "-c", "import mhyolo; print(mhyolo.__file__)"], cwd=elsewhere)
    assert Path(located.stdout.strip()).is_relative_to(wheel_env), located.stdout  # the wheel, not the checkout
    recipe = elsewhere / "my_recipe.yaml"
    recipe.write_text(f"classes: [basketball, football, tennis-ball]\nsources:\n"
                      f"  - path: {shared / 'data' / 'seed_balls'}\n"
                      f"    classes: {{basketball: basketball, football: football, tennis-ball: tennis-ball}}\n")
    plan = run([str(wheel_env / "bin" / "mhyolo"), "pipeline", "--config", str(recipe), "--plan"], cwd=elsewhere)
    import yaml

    stages = yaml.safe_load(plan.stdout)
    assert list(stages) == ["detector", "head", "joint"]  # a bare recipe runs the default stages
    assert stages["detector"]["epochs"] == 100 and stages["detector"]["weights"] == "yolov5n.pt"  # shipped hyp
    assert stages["head"]["model"] == "yolov5n-typehead" and stages["head"]["freeze"] == "detector"
    assert stages["joint"]["optim"]["lr0"] == 0.001  # shipped joint settings
    assert stages["head"]["weights"].endswith("detector/weights/best.safetensors")
    built = run([str(wheel_env / "bin" / "python"), "-c",
                  "from mhyolo.model.yolo import YoloModel; m = YoloModel('yolov5n-typehead-lite'); "
                  "print(sorted(m.heads))"], cwd=elsewhere)
    assert "type" in built.stdout
