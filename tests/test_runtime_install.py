"""The runtime install: the wheel with only what `pip install 'mhyolo[onnxruntime,openvino]'` declares (NumPy,
OpenCV, PyYAML, tqdm, the two runtimes and what they pull in), PyTorch not importable. It predicts with
exported models exactly as the full install does, and a command that needs PyTorch names the install
to use and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
from helpers.wheel import closure, only_distributions, project_requirements, run, wheel_venv
from test_export import IMAGES, WEIGHTS, needs_shared

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

RUNTIME_EXTRAS = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("runtime")
    env, purelib = wheel_venv(work)
    names = closure(project_requirements(RUNTIME_EXTRAS))
    assert "torch" not in names and "numpy" in names and "opencv-python-headless" in names
    only_distributions(purelib, names, work / "runtime_site")
    return env


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """COCO YOLOv5n exported by the full install: ONNX and an OpenVINO IR, at 320."""
    if not WEIGHTS.is_file():
        pytest.skip(f"shared folder absent: needs {WEIGHTS}")
    folder = tmp_path_factory.mktemp("exported")
    files = {"onnx": folder / "yolov5n.onnx", "openvino": folder / "yolov5n.xml"}
    for kind, path in files.items():
        run([sys.executable, "-m", "mhyolo.cli", "export", "--weights", str(WEIGHTS), "--format", kind,
             "--imgsz", "320", "--out", str(path)], cwd=folder)
    return files


@pytest.mark.slow
def test_the_runtime_install_has_no_torch(runtime_env: Path, tmp_path: Path) -> None:
    python = str(runtime_env / "bin" / "python")
    missing = run([python, "-c", "import torch"], cwd=tmp_path, expect=None)
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr
    found = run([python, "-c", "import mhyolo, numpy, cv2, onnxruntime, openvino; print(mhyolo.__file__)"], cwd=tmp_path)
    assert Path(found.stdout.strip()).is_relative_to(runtime_env)  # the wheel, not the checkout


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_the_runtime_install_predicts_what_the_full_install_predicts(runtime_env: Path, exported: dict[str, Path],
                                                                     kind: str, tmp_path: Path) -> None:
    command = ["predict", str(IMAGES[0].parent), "--weights", str(exported[kind]), "--json", "--no-images"]
    runtime = run([str(runtime_env / "bin" / "mhyolo"), *command], cwd=tmp_path)
    full = run([sys.executable, "-m", "mhyolo.cli", *command], cwd=tmp_path)
    assert runtime.stdout == full.stdout
    lines = [json.loads(line) for line in runtime.stdout.splitlines()]
    assert sorted(line["image"] for line in lines) == sorted(p.name for p in IMAGES)
    assert sum(len(line["detections"]) for line in lines) >= 4  # persons and a bus: something was compared
    api = run([str(runtime_env / "bin" / "python"), "-c",
               f"import mhyolo, sys; r = mhyolo.load({str(exported[kind])!r}).predict({str(IMAGES[0])!r}); "
               "print(len(r[0].boxes)); print('torch' in sys.modules)"], cwd=tmp_path)
    first = next(line for line in lines if line["image"] == IMAGES[0].name)
    assert api.stdout.split() == [str(len(first["detections"])), "False"]


@needs_shared
@pytest.mark.slow
def test_commands_needing_pytorch_name_the_install_to_use(runtime_env: Path, exported: dict[str, Path],
                                                          tmp_path: Path) -> None:
    mhyolo = str(runtime_env / "bin" / "mhyolo")
    assert "--weights" in run([mhyolo, "train", "--help"], cwd=tmp_path).stdout  # every command still listed
    for command in (["predict", str(IMAGES[0]), "--weights", str(WEIGHTS), "--json"],
                    ["export", "--weights", str(WEIGHTS), "--out", str(tmp_path / "m.onnx")],
                    ["predict", str(IMAGES[0]), "--weights", str(exported["onnx"]), "--scales", "320", "--flip",
                     "--json"]):
        result = run([mhyolo, *command], cwd=tmp_path, expect=2)
        assert "pip install 'mhyolo[train]'" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_missing_module_is_answered_with_its_install(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from mhyolo import cli
    from mhyolo.installs import install_hint

    assert "mhyolo[train]" in install_hint("torch.nn") and "mhyolo[train]" in install_hint("faster_coco_eval")
    assert "mhyolo[openvino]" in install_hint("openvino.runtime") and install_hint("yaml") is None

    def parser_running(missing: str):
        """A command line whose one command reaches the module `missing`, which is not installed."""
        def run(args) -> int:
            raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)

        parser = argparse.ArgumentParser(prog="mhyolo")
        parser.add_subparsers(dest="command").add_parser("stage").set_defaults(func=run)
        return lambda: parser

    monkeypatch.setattr(cli, "build_parser", parser_running("timm"))
    assert cli.main(["stage"]) == 2
    assert "mhyolo stage: error: this needs PyTorch" in capsys.readouterr().err
    monkeypatch.setattr(cli, "build_parser", parser_running("not_an_extra"))  # any other: a bug, not hidden
    with pytest.raises(ModuleNotFoundError):
        cli.main(["stage"])
