"""RKNN INT8 conversion and the rknn-toolkit2 simulator behind `InferenceBackend`.

The first group needs no RKNN environment: finding it (and the message when it is
missing), the uint8 NHWC input the worker gets (raw pixels, never normalised twice),
the calibration arrays, and the worker's pipe protocol (run with this python: every
command that does not touch the toolkit). The `rknn` group needs `make rknn-env` and
is run with `.venv/bin/python -m pytest -m rknn tests/test_rknn.py`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mhyolo.deploy import rknn as rk
from mhyolo.deploy import rknn_env
from mhyolo.errors import MhyoloError, WeightsError
from mhyolo.infer.preprocess import letterbox, to_float_batch
from mhyolo.paths import shared_dir

IMAGES = [shared_dir() / "images" / "bus.jpg", shared_dir() / "images" / "zidane.jpg"]
WEIGHTS = shared_dir() / "weights" / "yolov5n.pt"


def _rknn_python() -> Path | None:
    try:
        return rk.find_rknn_python()
    except MhyoloError:
        return None


def _synthetic_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A noisy image with every byte value present, so any rescaling shows."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)
    return image


# -- no RKNN environment needed -------------------------------------------------------------------

def test_missing_environment_says_how_to_create_it(monkeypatch, tmp_path):
    monkeypatch.delenv(rknn_env.ENV_VARIABLE, raising=False)
    monkeypatch.setattr(rknn_env, "repo_root", lambda: tmp_path)
    with pytest.raises(MhyoloError) as info:
        rk.find_rknn_python()
    message = str(info.value)
    assert "make rknn-env" in message
    assert str(tmp_path / rknn_env.VENV_NAME) in message
    assert rknn_env.ENV_VARIABLE in message


def test_environment_variable_must_point_at_a_python(monkeypatch, tmp_path):
    monkeypatch.setenv(rknn_env.ENV_VARIABLE, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(MhyoloError, match="not an executable python"):
        rk.find_rknn_python()
    monkeypatch.setenv(rknn_env.ENV_VARIABLE, sys.executable)
    assert rk.find_rknn_python() == Path(sys.executable)


def test_checkout_environment_is_found(monkeypatch, tmp_path):
    monkeypatch.delenv(rknn_env.ENV_VARIABLE, raising=False)
    monkeypatch.setattr(rknn_env, "repo_root", lambda: tmp_path)
    python = tmp_path / rknn_env.VENV_NAME / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    assert rk.find_rknn_python() == python


def test_worker_input_is_the_raw_letterboxed_pixels():
    """Validation's path (uint8 RGB CHW / 255) and the predictor's (BGR -> `to_float_batch`)
    both reach the worker as the exact uint8 RGB bytes: no second normalisation."""
    original = _synthetic_rgb(37, 53)
    rgb, _ = letterbox(original, 64)
    as_validation = torch.from_numpy(rgb.transpose(2, 0, 1)[None].copy()).float().div_(255.0)
    as_predictor = to_float_batch([np.ascontiguousarray(rgb[:, :, ::-1])])  # the predictor reads BGR
    for batch in (as_validation, as_predictor, as_validation.numpy()):
        pixels = rk.to_worker_input(batch)
        assert pixels.dtype == np.uint8 and pixels.shape == (1, 64, 64, 3)
        np.testing.assert_array_equal(pixels[0], rgb)
    assert rk.to_worker_input(as_validation)[0, 0, 0].tolist() == list(rgb[0, 0])  # R, G, B order kept


def test_worker_input_refuses_unscaled_floats():
    raw = torch.from_numpy(_synthetic_rgb(16, 16).transpose(2, 0, 1)[None].copy()).float()
    with pytest.raises(MhyoloError, match=r"\[0, 1\]"):
        rk.to_worker_input(raw)
    with pytest.raises(MhyoloError, match="B, 3, H, W"):
        rk.to_worker_input(np.zeros((1, 16, 16, 3), np.float32))


def test_calibration_arrays_are_raw_nchw_pixels(tmp_path):
    """What `rknn.build` reads: uint8 (1, 3, H, W) RGB, the same bytes the worker is fed."""
    files = []
    for i in range(3):
        rgb = _synthetic_rgb(30 + 7 * i, 50, seed=i)
        path = tmp_path / "src" / f"im{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), rgb[:, :, ::-1])
        files.append(path)
    listing, digest = rk.write_calibration(files, 64, tmp_path / "calib")
    lines = listing.read_text().splitlines()
    assert len(lines) == 3
    for path, line in zip(files, lines):
        array = np.load(line)
        expected, _ = letterbox(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), 64)
        assert array.dtype == np.uint8 and array.shape == (1, 3, 64, 64)
        np.testing.assert_array_equal(array[0].transpose(1, 2, 0), expected)
    np.testing.assert_array_equal(rk.probe_image(listing)[0], np.load(lines[0])[0].transpose(1, 2, 0))
    again, same = rk.write_calibration(files, 64, tmp_path / "again")
    assert same == digest
    _, other = rk.write_calibration(files[:2], 64, tmp_path / "fewer")
    assert other != digest
    with pytest.raises(MhyoloError, match="missing"):
        rk.write_calibration([tmp_path / "gone.png"], 64, tmp_path / "x")


def test_fingerprint_tells_builds_apart():
    rng = np.random.default_rng(0)
    outputs = {"boxes_p3": rng.random((1, 12, 4, 4), dtype=np.float32),
               "scores_p3": rng.random((1, 6, 4, 4), dtype=np.float32)}
    reference = json.loads(json.dumps(rk.fingerprint(outputs)))  # as stored in the sidecar
    assert rk.same_fingerprint(rk.fingerprint(outputs), reference)
    shifted = dict(outputs, scores_p3=outputs["scores_p3"] + np.float32(1 / 256))  # one INT8 step
    assert not rk.same_fingerprint(rk.fingerprint(shifted), reference)


def test_rknn_without_sidecar_is_refused(tmp_path):
    model = tmp_path / "model.rknn"
    model.write_bytes(b"RKNN")
    with pytest.raises(WeightsError, match=r"model\.rknn\.json"):
        rk.RknnSimulatorBackend(model)
    rk.sidecar_path(model).write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        rk.read_sidecar(model)


def test_worker_protocol_without_the_toolkit(tmp_path):
    """The pipe protocol, run with this python: answers survive toolkit-free errors, and
    the toolkit's own prints (fd 1) cannot corrupt the answers."""
    with rk.RknnWorker(python=Path(sys.executable), log_path=tmp_path / "worker.log") as worker:
        with pytest.raises(MhyoloError, match="infer before build"):
            worker.request("infer", {"images": np.zeros((1, 8, 8, 3), np.uint8)})
        with pytest.raises(MhyoloError, match="unknown command 'shrug'"):
            worker.request("shrug")
        with pytest.raises(MhyoloError, match="infer before build"):  # still serving after errors
            worker.request("infer", {"images": np.zeros((1, 8, 8, 3), np.uint8)})
    assert worker.process.returncode == 0
    assert "infer before build" in (tmp_path / "worker.log").read_text()


def test_worker_imports_no_mhyolo():
    source = Path(rknn_env.WORKER_FILE).read_text()
    assert "import mhyolo" not in source and "from mhyolo" not in source
    assert "import torch" not in source


# -- needs the RKNN environment (make rknn-env) ---------------------------------------------------

needs_rknn = pytest.mark.skipif(_rknn_python() is None,
                                reason="the rknn-toolkit2 environment is absent: run `make rknn-env`, then "
                                       "`.venv/bin/python -m pytest -m rknn tests/test_rknn.py`")
needs_shared = pytest.mark.skipif(not WEIGHTS.is_file() or not all(p.is_file() for p in IMAGES),
                                  reason=f"shared folder absent: needs {WEIGHTS} and the sample images")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """yolov5n exported at 160 and converted with the two sample images as calibration."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")
    from mhyolo.deploy.onnx_export import export_onnx
    from mhyolo.model.weights import load_model

    root = tmp_path_factory.mktemp("rknn")
    (root / "images" / "train").mkdir(parents=True)
    for image in IMAGES:
        shutil.copy(image, root / "images" / "train" / image.name)
    data = root / "data.yaml"
    data.write_text("path: .\ntrain: images/train\nval: images/train\nnames: [person]\n")
    onnx_path = export_onnx(load_model(WEIGHTS), root / "y.onnx", imgsz=160).path
    rknn_path = rk.convert_rknn(onnx_path, root / "y.rknn", data, calib_images=2)
    return {"onnx": Path(onnx_path), "rknn": rknn_path, "data": data}


@pytest.mark.rknn
@needs_rknn
@needs_shared
def test_conversion_writes_model_sidecar_and_analysis(converted):
    rknn_path = converted["rknn"]
    assert rknn_path.stat().st_size > 1_000_000  # INT8 yolov5n: ~1.9M weights
    record = rk.read_sidecar(rknn_path)
    assert record["onnx"]["path"] == str(converted["onnx"].resolve())
    assert record["onnx"]["relative"] == "y.onnx"  # found again when the folder moves
    assert sorted(Path(f).name for f in record["calibration"]["files"]) == sorted(p.name for p in IMAGES)
    assert record["rknn"]["target"] == "rk3588" and record["rknn"]["quantized_method"] == "channel"
    assert record["rknn"]["std"] == [255.0, 255.0, 255.0]
    worst = rk.worst_layers(rk.accuracy_dir(rknn_path))
    assert worst, "no per-layer rows parsed from error_analysis.txt"
    assert all(-1.0 <= cosine <= 1.0 for _, cosine in worst)
    assert worst[0][1] > 0.9, f"INT8 drifts from float already inside the graph: {worst}"
    assert not (rk.accuracy_dir(rknn_path) / "golden").exists()


@pytest.mark.rknn
@needs_rknn
@needs_shared
def test_simulator_detects_what_onnxruntime_detects(converted):
    from torchvision.ops import box_iou

    from mhyolo.runtime.load import load_backend
    from mhyolo.infer.predictor import Predictor

    image = cv2.imread(str(IMAGES[0]))
    ort = load_backend(converted["onnx"])
    sim = load_backend(converted["rknn"])
    try:
        assert isinstance(sim, rk.RknnSimulatorBackend)
        assert sim.rebuild_matches is True, "the simulator's rebuild is not the converted model"
        assert sim.imgsz == 160 and sim.names == ort.names
        expected = Predictor(ort, imgsz=160, conf=0.3).predict([image])[0]
        got = Predictor(sim, imgsz=160, conf=0.3).predict([image])[0]
        batch = to_float_batch([letterbox(cv2.imread(str(p)), 160)[0] for p in IMAGES])
        raw_ort, raw_sim = ort.run(batch), sim.run(batch)  # a batch of 2 through one worker
    finally:
        sim.close()
    assert len(expected) >= 2
    assert len(got) == len(expected)
    iou = box_iou(torch.from_numpy(expected.boxes), torch.from_numpy(got.boxes))
    best = iou.max(dim=1)
    assert (best.values > 0.8).all(), iou
    np.testing.assert_array_equal(got.class_ids[best.indices.numpy()], expected.class_ids)
    for name, value in raw_ort.items():
        a, b = value.ravel(), raw_sim[name].ravel()
        assert raw_sim[name].shape == value.shape
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99, name
