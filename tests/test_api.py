"""The Python API: the README's snippet runs as written, and `mhyolo.load(...)` gives the same
detections as the command line, for every kind of source."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.models import sports_ball_model
from helpers.tiny_data import tiny_ball_dataset

import mhyolo
from mhyolo.cli import main
from mhyolo.errors import ConfigError, DataError
from mhyolo.model.weights import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The Python block that follows the README's marker comment, exactly as a reader copies it."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- the test suite runs this block as it is \(tests/test_api.py\) -->\n```python\n(.*?)```",
                      text, re.S)
    assert match, "README.md lost its Python snippet"
    return match.group(1)


@pytest.fixture(scope="module")
def demo_like(shared: Path, official_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as after `make demo`: runs/demo/model.safetensors (a typed ball model),
    runs/demo/data (a small real dataset) and a photo of a ball."""
    folder = tmp_path_factory.mktemp("api")
    data = tiny_ball_dataset(shared, folder / "runs" / "demo" / "data", per_type_train=1, per_type_val=2)
    weights = save_checkpoint(folder / "runs" / "demo" / "model.safetensors",
                              sports_ball_model(official_weights, "yolov5n-typehead-lite"),
                              {"train_config": {"imgsz": 320}})
    model = mhyolo.load(weights)  # COCO's sports ball finds some of these balls: take the first it finds
    photo = next(p for p in sorted((shared / "data" / "seed_balls" / "images").iterdir())[:60]
                 if len(model.predict(p)[0]))
    shutil.copy(photo, folder / "photo.jpg")
    return folder


@pytest.mark.slow
def test_the_readme_snippet_runs_as_written(demo_like: Path, shared: Path) -> None:
    env = {**os.environ, "MHYOLO_SHARED": str(shared), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", readme_snippet()], cwd=demo_like, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (demo_like / "photo_pred.jpg").is_file() and (demo_like / "model.onnx").is_file()
    printed = [json.loads(line.replace("'", '"')) for line in result.stdout.splitlines() if line.startswith("{'image'")]
    assert printed and printed[0]["image"] == "photo.jpg" and printed[0]["detections"]  # the ball was found
    assert "type_name" in printed[0]["detections"][0]
    assert re.search(r"^mAP50 \d\.\d{3}, type accuracy \d\.\d{3}$", result.stdout, re.M)
    assert re.search(r"^Result\('photo.jpg': \d+ detection\(s\)", result.stdout, re.M)  # the ONNX model's


def test_load_and_predict_match_the_command_line(demo_like: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = demo_like / "runs" / "demo" / "model.safetensors"
    model = mhyolo.load(weights)
    assert model.names == ["ball"] and model.type_names == ["basketball", "football", "tennis-ball"]
    assert model.imgsz == 320  # the size it was trained at
    folder = demo_like / "runs" / "demo" / "data" / "images" / "val"
    results = model.predict(folder)
    assert [r.name for r in results] == sorted(p.name for p in folder.iterdir())
    assert main(["predict", str(folder), "--weights", str(weights), "--out", str(demo_like / "cli"), "--json"]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r.to_json() for r in results] == cli
    first = model.predict(demo_like / "photo.jpg")[0]
    assert len(first) and first.boxes.shape == (len(first), 4) and len(first.types) == len(first) == len(first.scores)
    drawn = first.plot()
    assert drawn.shape == first.image.shape and not np.array_equal(drawn, first.image)


def test_arrays_lists_and_streams_give_the_same_results(demo_like: Path) -> None:
    model = mhyolo.load(demo_like / "runs" / "demo" / "model.safetensors")
    photo = demo_like / "photo.jpg"
    from_file = model.predict(photo)[0]
    from_array, again = model([cv2.imread(str(photo)), photo], conf=0.25)
    assert from_array.name == "image0" and from_array.path is None and again.path == photo
    np.testing.assert_allclose(from_array.boxes, from_file.boxes)
    assert from_array.types == from_file.types
    streamed = model.predict([photo, photo], stream=True)
    assert not isinstance(streamed, list)
    assert [r.to_json() for r in streamed] == [from_file.to_json()] * 2
    assert len(model.predict(photo, conf=0.99)[0]) <= len(from_file)


def test_bad_input_says_what_and_where(demo_like: Path, tmp_path: Path) -> None:
    model = mhyolo.load(demo_like / "runs" / "demo" / "model.safetensors")
    with pytest.raises(DataError, match="array 0: expected a BGR uint8 image"):
        model.predict(np.zeros((32, 32), np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: cannot decode"):
        model.predict([demo_like / "photo.jpg", broken])
    with pytest.raises(ConfigError, match="conf must be between 0 and 1"):
        model.predict(demo_like / "photo.jpg", conf=2)
    with pytest.raises(DataError, match="no such file"):
        model.predict(tmp_path / "missing.jpg")


def test_val_matches_the_command_line_and_exported_models_do_not_export(demo_like: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    weights = demo_like / "runs" / "demo" / "model.safetensors"
    data = demo_like / "runs" / "demo" / "data" / "data.yaml"
    scores = mhyolo.load(weights).val(data)
    assert main(["val", "--data", str(data), "--weights", str(weights), "--json"]) == 0
    assert json.dumps(scores) == capsys.readouterr().out.strip().splitlines()[-1]  # the same figures, same order
    onnx = mhyolo.load(weights).export("onnx", out=tmp_path / "m.onnx")
    exported = mhyolo.load(onnx)
    assert exported.imgsz == 320 and exported.type_names == mhyolo.load(weights).type_names
    with pytest.raises(ConfigError, match="only a PyTorch model"):
        exported.export("openvino")
