"""Checkpoints written by YOLOv5's train.py (best.pt / last.pt) and by ultralytics 8.x.

The files are built at test time by `helpers.checkpoints` with the same pickled
names as the real ones (checked against the official release file); the classes
they name do not exist when they are read.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.checkpoints import (
    pickled_globals,
    rename_pickled_globals,
    write_ultralytics_checkpoint,
    write_yolov5_checkpoint,
)
from helpers.models import sports_ball_model
from helpers.tiny_data import tiny_ball_dataset
from mhyolo.cli import main
from mhyolo.errors import UnsafePickleError, WeightsError
from mhyolo.model.safe_pickle import read_checkpoint
from mhyolo.model.weights import import_official, load_checkpoint, load_model, save_checkpoint

# (file name, builder options, names its pickle adds to / swaps in the official release file's)
VARIANTS = {
    "v7-best": (dict(version="7.0", stripped=True), {"pathlib.PosixPath"}),
    "v7-last": (dict(version="7.0", stripped=False),
                {"pathlib.PosixPath", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
                 "_codecs.encode"}),
    "v7-best-windows": (dict(version="7.0", stripped=True, windows=True), {"pathlib.WindowsPath"}),
    "v6-last-windows-numpy1": (dict(version="6.x", stripped=False, windows=True, numpy1=True),
                               {"pathlib.WindowsPath", "argparse.Namespace", "numpy.core.multiarray.scalar",
                                "numpy.dtype", "_codecs.encode"}),
}


def _detached(model: torch.nn.Module) -> torch.nn.Module:
    """The same model with its Detect weights halved: what `model` holds next to a different `ema`."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.detect.parameters():
            parameter.mul_(0.5)
    return other


@pytest.fixture(scope="module")
def coco(official_weights: Path):
    return load_model(official_weights)


@pytest.fixture(scope="module")
def coco_checkpoints(tmp_path_factory: pytest.TempPathFactory, coco) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("yolov5-train")
    return {name: write_yolov5_checkpoint(folder / f"{name}.pt", coco, training_weights=_detached(coco), **options)
            for name, (options, _) in VARIANTS.items()}


def test_fixtures_pickle_the_names_real_training_files_have(coco_checkpoints, official_weights: Path) -> None:
    release = pickled_globals(official_weights)
    assert "models.yolo.Model" in release and "models.common.C3" in release
    for name, (options, added) in VARIANTS.items():
        model_class = "models.yolo.DetectionModel" if options["version"] == "7.0" else "models.yolo.Model"
        expected = (release - {"models.yolo.Model"}) | {model_class} | added
        assert pickled_globals(coco_checkpoints[name]) == expected, name
    assert not [m for m in sys.modules if m == "models" or m.startswith("models.")]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_training_checkpoints_load_their_ema_weights(name: str, coco_checkpoints, coco) -> None:
    imported = import_official(coco_checkpoints[name])
    expected = coco.state_dict()
    assert imported.names == coco.names
    assert set(imported.state_dict) == set(expected)
    assert all(torch.equal(imported.state_dict[k], expected[k]) for k in expected)
    stripped = VARIANTS[name][0]["stripped"]
    assert imported.info["weights_from"] == ("model" if stripped else "ema")
    assert imported.info["epoch"] == (-1 if stripped else 41)
    assert imported.info["best_fitness"] == (None if stripped else pytest.approx(0.41372))
    json.dumps(imported.info)  # goes into the safetensors metadata


def test_model_entry_is_used_when_ema_is_none(tmp_path: Path, coco) -> None:
    training = _detached(coco)
    path = write_yolov5_checkpoint(tmp_path / "best.pt", training)  # stripped: ema None, model = these weights
    imported = import_official(path)
    assert imported.info["weights_from"] == "model"
    key = "model.24.m.0.weight"
    assert torch.equal(imported.state_dict[key], training.state_dict()[key].half().float())  # saved in fp16
    assert not torch.equal(imported.state_dict[key], coco.state_dict()[key])


def test_paths_numpy_values_and_namespaces_become_plain_data(coco_checkpoints) -> None:
    v7 = read_checkpoint(coco_checkpoints["v7-last"])
    assert v7["opt"]["evolve_population"] == "/home/user/yolov5/data/hyps"
    assert v7["opt"]["save_dir"] == "/home/user/yolov5/runs/train/exp"
    assert v7["git"]["branch"] == "master" and v7["updates"] == 2184
    assert isinstance(v7["best_fitness"], np.ndarray) and v7["best_fitness"].tolist() == [0.41372]
    assert v7["best_fitness"].dtype == np.float64
    groups = v7["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0005, 0.0] and groups[0]["nesterov"] is True
    buffers = [s["momentum_buffer"] for s in v7["optimizer"]["state"].values()]
    assert len(buffers) == sum(len(g["params"]) for g in groups)
    assert all(b.dtype == torch.float32 for b in buffers)

    windows = read_checkpoint(coco_checkpoints["v7-best-windows"])
    assert windows["opt"]["save_dir"] == "C:\\Users\\user\\yolov5\\runs\\train\\exp"

    v6 = read_checkpoint(coco_checkpoints["v6-last-windows-numpy1"])
    assert type(v6["opt"]).stub_name == "argparse.Namespace"
    assert v6["opt"].state["evolve_population"] == "C:\\Users\\user\\yolov5\\data\\hyps"
    assert v6["best_fitness"] == 0.41372 and type(v6["best_fitness"]) is float
    assert type(v6["model"]).stub_name == "models.yolo.Model" and v6["wandb_id"] is None


# ------------------------------------------------------------------ refusals
def test_segmentation_checkpoints_are_refused_by_their_head(tmp_path: Path, coco) -> None:
    path = write_yolov5_checkpoint(tmp_path / "seg.pt", coco)
    rename_pickled_globals(path, {"models.yolo Detect": "models.yolo Segment",
                                  "models.yolo DetectionModel": "models.yolo SegmentationModel"})
    with pytest.raises(WeightsError, match=r"seg\.pt: a models\.yolo\.SegmentationModel ending in "
                                           r"models\.yolo\.Segment: only detection checkpoints"):
        import_official(path)


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _torch_zip(path: Path, payload: bytes) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return path


def test_paths_do_not_open_the_door_to_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"opt": {"save_dir": Path("/tmp/runs")}, "model": _RunsShell(f"touch {marker}")},
                           protocol=2)
    assert b"pathlib\nPosixPath" in payload and b"\nsystem\n" in payload
    path = _torch_zip(tmp_path / "evil.pt", payload)
    with pytest.raises(UnsafePickleError, match=r"evil\.pt.*(posix|os)\.system"):
        import_official(path)
    assert main(["import-weights", str(path), "-o", str(tmp_path / "out.safetensors")]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("value, message", [
    (np.array([object()], dtype=object), "not a plain number type"),          # object arrays pickle a list
    (np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]), "not a plain number type"),
    (np.dtype("O"), "not a plain number type"),
])
def test_numpy_values_other_than_plain_numbers_are_refused(tmp_path: Path, value, message: str) -> None:
    path = _torch_zip(tmp_path / "np.pt", pickle.dumps({"best_fitness": value}, protocol=2))
    with pytest.raises(UnsafePickleError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("value, name, disguise, message", [
    # an object array whose dtype claims float: its state carries a list, not bytes
    (np.array([1, 2], dtype=object), b"X\x02\x00\x00\x00O8", b"X\x02\x00\x00\x00f8", "not raw bytes"),
    # a structured dtype under a plain name: its state adds fields
    (np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]), b"X\x03\x00\x00\x00V12", b"X\x03\x00\x00\x00c16",
     "dtype state"),
])
def test_numpy_values_in_disguise_are_refused(tmp_path: Path, value, name: bytes, disguise: bytes,
                                              message: str) -> None:
    payload = pickle.dumps({"best_fitness": value}, protocol=2)
    assert payload.count(name) == 1
    path = _torch_zip(tmp_path / "np.pt", payload.replace(name, disguise))
    with pytest.raises(UnsafePickleError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("payload, message", [
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", "latin1"),
    (b"\x80\x02cpathlib\nPosixPath\nK\x01\x85R.", "non-text parts"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncbuiltins\nlist\nK\x00\x85X\x01\x00\x00\x00b\x87R.",
     "only numpy.ndarray"),
])
def test_allowed_names_check_their_arguments(tmp_path: Path, payload: bytes, message: str) -> None:
    with pytest.raises(UnsafePickleError, match=message):
        read_checkpoint(_torch_zip(tmp_path / "bad.pt", payload))


@pytest.mark.parametrize("family, stripped", [("yolov5u", True), ("yolov8", True), ("yolov8", False)])
def test_ultralytics_checkpoints_are_refused_with_what_to_do(tmp_path: Path, coco, shared: Path, capsys,
                                                             family: str, stripped: bool) -> None:
    path = write_ultralytics_checkpoint(tmp_path / f"{family}n.pt", coco, family=family, stripped=stripped)
    names = pickled_globals(path)
    assert {"ultralytics.nn.tasks.DetectionModel", "ultralytics.nn.modules.head.Detect",
            "ultralytics.nn.modules.block.DFL", "ultralytics.nn.modules.conv.Conv"} <= names
    assert ("ultralytics.nn.modules.block.C2f" in names) == (family == "yolov8")
    assert ("ultralytics.utils.IterableSimpleNamespace" in names) == (not stripped)
    assert not [m for m in sys.modules if m.startswith("ultralytics")]
    with pytest.raises(WeightsError) as info:
        import_official(path)
    assert not isinstance(info.value, UnsafePickleError)
    message = str(info.value)
    for part in (str(path), "ultralytics 8.x", "ultralytics.nn.tasks.DetectionModel", "anchor-free",
                 "not supported", "anchor-based YOLOv5 head", "yolov5n.pt"):
        assert part in message
    assert "allow-list" not in message
    image = shared / "images" / "bus.jpg"
    assert main(["predict", str(image), "--weights", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "anchor-free" in capsys.readouterr().err


# ------------------------------------------------------------------ the CLI on them
def _detections(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_with_a_best_pt_matches_the_release_weights(tmp_path: Path, coco_checkpoints, official_weights,
                                                           shared: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        (images / name).write_bytes((shared / "images" / name).read_bytes())
    runs = {}
    for weights in (official_weights, coco_checkpoints["v7-best"], coco_checkpoints["v6-last-windows-numpy1"]):
        assert main(["predict", str(images), "--weights", str(weights), "--out", str(tmp_path / weights.stem),
                     "--json"]) == 0
        runs[weights.stem] = _detections(capsys)
    reference = runs.pop(official_weights.stem)
    assert {d["name"] for d in reference[0]["detections"]} >= {"bus", "person"}
    for records in runs.values():
        assert records == reference  # same boxes, scores and names, to the last digit printed


def test_import_weights_of_a_last_pt_takes_the_ema(tmp_path: Path, coco_checkpoints, coco, capsys) -> None:
    out = tmp_path / "last.safetensors"
    assert main(["import-weights", str(coco_checkpoints["v7-last"]), "-o", str(out)]) == 0
    assert "'ema' entry" in capsys.readouterr().out
    restored = load_checkpoint(out)
    assert restored.metadata["source_info"]["weights_from"] == "ema"
    assert restored.metadata["source_info"]["best_fitness"] == pytest.approx(0.41372)
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(restored.model.eval().predict(x)["detection"], coco.predict(x)["detection"])


def test_val_of_a_trained_ball_detector_matches_its_safetensors(tmp_path: Path, official_weights: Path,
                                                                shared: Path, capsys) -> None:
    """A one-class ball detector saved as train.py would (6.x last.pt and 7.0 best.pt) scores exactly
    like the same weights in our own format, on real ball photos."""
    ball = sports_ball_model(official_weights)
    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=1, per_type_val=2)
    files = [save_checkpoint(tmp_path / "ball.safetensors", ball),
             write_yolov5_checkpoint(tmp_path / "best.pt", ball),
             write_yolov5_checkpoint(tmp_path / "last.pt", ball, version="6.x", stripped=False, windows=True,
                                     numpy1=True, training_weights=_detached(ball))]
    scores = []
    for weights in files:
        assert main(["val", "--data", str(data), "--weights", str(weights), "--imgsz", "320", "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert scores[0]["images"] == 6 and scores[0]["map50"] > 0
    assert scores[1] == scores[0] and scores[2] == scores[0]
