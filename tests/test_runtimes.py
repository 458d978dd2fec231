"""Runtimes behind `InferenceBackend`: dispatch by suffix, and the same detections from
PyTorch, ONNX Runtime and OpenVINO through the one shared pre- and post-processing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.optional import needs
from test_export import IMAGES, WEIGHTS, needs_shared, typehead_person_model

from mhyolo.errors import ConfigError, WeightsError
from mhyolo.runtime.load import input_size, load_backend
from mhyolo.infer.predictor import Predictor

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'mhyolo[deploy]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")

from mhyolo.deploy.check import check_backend, read_images  # noqa: E402
from mhyolo.deploy.onnx_export import export_onnx, export_openvino  # noqa: E402
from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402

needs_openvino = needs("openvino")

IMGSZ = 320
SCORE_TOL = 1e-3
BOX_TOL = 1.0  # pixels of the original image, at most 1080/320 per input pixel


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not WEIGHTS.is_file() or not all(p.is_file() for p in IMAGES):
        pytest.skip(f"shared folder absent: needs {WEIGHTS} and the sample images")
    model = typehead_person_model()
    folder = tmp_path_factory.mktemp("runtimes")
    onnx_path = export_onnx(model, folder / "typehead.onnx", imgsz=IMGSZ).path
    return model, onnx_path, folder


def _same(reference, candidate):
    assert len(candidate) == len(reference) > 0
    np.testing.assert_allclose(candidate.boxes, reference.boxes, atol=BOX_TOL)
    np.testing.assert_allclose(candidate.scores, reference.scores, atol=SCORE_TOL)
    np.testing.assert_array_equal(candidate.class_ids, reference.class_ids)
    np.testing.assert_array_equal(candidate.type_ids, reference.type_ids)
    assert candidate.type_names == reference.type_names
    np.testing.assert_allclose(candidate.type_scores, reference.type_scores, atol=SCORE_TOL)


@needs_shared
def test_load_backend_dispatches_by_suffix(exported, tmp_path):
    model, onnx_path, _ = exported
    assert isinstance(load_backend(onnx_path, threads=1), OnnxRuntimeBackend)
    assert type(load_backend(WEIGHTS)).__name__ == "YoloModel"
    with pytest.raises(WeightsError, match="model file not found: .*missing.onnx"):
        load_backend(tmp_path / "missing.onnx")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format '.tflite'"):
        load_backend(tmp_path / "m.tflite")
    with pytest.raises(ConfigError, match="runtime must be one of"):
        load_backend(onnx_path, runtime="tensorrt")
    with pytest.raises(ConfigError, match="needs an exported .onnx or .xml"):
        load_backend(WEIGHTS, runtime="openvino")


@needs_shared
def test_exported_models_take_only_their_size(exported):
    _, onnx_path, _ = exported
    backend = load_backend(onnx_path, threads=1)
    assert input_size(backend, None) == IMGSZ and input_size(backend, IMGSZ) == IMGSZ
    with pytest.raises(ConfigError, match=f"exported for --imgsz {IMGSZ}, not 640"):
        input_size(backend, 640)
    assert input_size(load_backend(WEIGHTS), None) == 640


@needs_shared
@needs_openvino
def test_pytorch_onnxruntime_and_openvino_give_the_same_detections(exported):
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    model, onnx_path, folder = exported
    xml_path = export_openvino(onnx_path, folder / "ir" / "model.xml")
    assert (folder / "ir" / "model.bin").is_file()
    images = read_images(IMAGES)
    backends = {
        "onnxruntime": load_backend(onnx_path, threads=1),
        "openvino-onnx": load_backend(onnx_path, runtime="openvino", threads=1),
        "openvino-ir": load_backend(xml_path, threads=1),
    }
    assert isinstance(backends["openvino-ir"], OpenVinoBackend) and backends["openvino-ir"].precision == "f32"
    reference = Predictor(model, imgsz=IMGSZ).predict(images)
    assert reference[0].has_types
    for name, backend in backends.items():
        assert backend.names == ["person"] and backend.type_names == model.type_names
        for ref, got in zip(reference, Predictor(backend, imgsz=IMGSZ).predict(images)):
            _same(ref, got)
        check = check_backend(model, backend, images)
        assert check.ok, (name, check.problems)


@needs_shared
def test_cli_predict_with_onnx_matches_the_official_pt(tmp_path, capsys):
    from mhyolo.cli import main

    onnx_path = tmp_path / "yolov5n.onnx"
    assert main(["export", "--weights", str(WEIGHTS), "--out", str(onnx_path), "--imgsz", "320"]) == 0
    capsys.readouterr()
    bus = str(IMAGES[0])
    results = {}
    # the same square input in both (PyTorch would letterbox rectangularly by default)
    errors = {}
    for key, extra in (("pt", ["--weights", str(WEIGHTS), "--imgsz", "320", "--square"]),
                       ("onnx", ["--weights", str(onnx_path)])):
        assert main(["predict", bus, *extra, "--out", str(tmp_path / key), "--json"]) == 0
        captured = capsys.readouterr()
        results[key], errors[key] = json.loads(captured.out.strip().splitlines()[-1])["detections"], captured.err
    assert "fixed 320x320 input: square inputs" in errors["onnx"]  # rectangular was asked for, and is not possible
    assert len(results["onnx"]) == len(results["pt"]) >= 3
    for pt, ox in zip(results["pt"], results["onnx"]):
        assert ox["class"] == pt["class"] and ox["name"] == pt["name"]
        assert abs(ox["score"] - pt["score"]) <= 0.01
        assert np.allclose(ox["box"], pt["box"], atol=BOX_TOL * 2)
    assert main(["predict", bus, "--weights", str(onnx_path), "--imgsz", "640", "--out", str(tmp_path / "x")]) == 2


@needs_shared
@needs_openvino
def test_cli_exports_the_typehead_model_to_openvino_ir(tmp_path, capsys):
    from mhyolo.cli import main
    from mhyolo.model.weights import save_checkpoint

    weights = save_checkpoint(tmp_path / "typehead.safetensors", typehead_person_model())
    out = tmp_path / "ir"
    code = main(["export", "--weights", str(weights), "--format", "openvino", "--out", str(out), "--imgsz", "160"])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.bin", "model.xml"]
    assert "OpenVinoBackend vs PyTorch" in printed and "types_p5" in printed
    backend = load_backend(out / "model.xml", threads=1)
    assert backend.imgsz == 160 and backend.type_names == ["basketball", "football", "tennis-ball"]
    x = torch.rand(1, 3, 160, 160)
    assert backend.predict(x)["type"].shape == (1, 3 * (20 * 20 + 10 * 10 + 5 * 5), 3)



@needs_shared
def test_cli_val_scores_an_onnx_model_like_its_pytorch_checkpoint(exported, tmp_path, capsys):
    """A tiny ball set; same model as .safetensors and as .onnx: same mAP and type metrics."""
    from helpers.tiny_data import tiny_ball_dataset

    from mhyolo.cli import main
    from mhyolo.model.weights import save_checkpoint
    from mhyolo.paths import shared_dir

    if not (shared_dir() / "data" / "seed_balls").is_dir():
        pytest.skip(f"{shared_dir() / 'data' / 'seed_balls'} is absent")
    model, onnx_path, _ = exported
    data = tiny_ball_dataset(shared_dir(), tmp_path / "data", per_type_train=0, per_type_val=2)
    weights = save_checkpoint(tmp_path / "typehead.safetensors", model)
    scores = {}
    runs = (("pt", ["--weights", str(weights), "--imgsz", str(IMGSZ)]), ("onnx", ["--weights", str(onnx_path)]))
    for key, extra in runs:
        assert main(["val", "--data", str(data), *extra, "--batch", "3", "--json"]) == 0
        scores[key] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["onnx"]["images"] == scores["pt"]["images"] == 6
    assert set(scores["onnx"]) == set(scores["pt"])
    assert scores["pt"]["boxes"] == 6 and "cls_accuracy" in scores["pt"]
    for name, value in scores["pt"].items():
        if isinstance(value, float):
            assert scores["onnx"][name] == pytest.approx(value, abs=1e-3), name


@needs_shared
def test_cli_sliced_predict_on_images_and_video_alike_in_pytorch_and_onnx(tmp_path, capsys):
    import cv2

    from mhyolo.cli import main

    onnx_path = tmp_path / "yolov5n.onnx"
    assert main(["export", "--weights", str(WEIGHTS), "--out", str(onnx_path), "--imgsz", "320"]) == 0
    bus = cv2.imread(str(IMAGES[0]))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (bus.shape[1], bus.shape[0]))
    for _ in range(2):
        writer.write(bus)
    writer.release()
    capsys.readouterr()
    results = {}
    for key, weights in (("pt", ["--weights", str(WEIGHTS), "--imgsz", "320", "--square"]),
                         ("onnx", ["--weights", str(onnx_path)])):
        for source in (str(IMAGES[0]), str(video)):
            code = main(["predict", source, *weights, "--slice", "480", "--out", str(tmp_path / key), "--json"])
            captured = capsys.readouterr()
            assert code == 0, captured.err
            results[key, Path(source).suffix] = [json.loads(line)["detections"] for line in captured.out.splitlines()
                                                 if line.startswith("{")]
    image_pt, image_onnx = results["pt", ".jpg"][0], results["onnx", ".jpg"][0]
    assert len(image_pt) >= 4 and len(image_pt) == len(image_onnx)
    for pt, ox in zip(image_pt, image_onnx):
        assert ox["class"] == pt["class"] and abs(ox["score"] - pt["score"]) <= 0.01
        assert np.allclose(ox["box"], pt["box"], atol=BOX_TOL * 2)
    assert len(results["pt", ".mp4"]) == 2 and len(results["pt", ".mp4"][0]) >= 4  # every frame sliced too
    code = main(["predict", str(IMAGES[0]), "--weights", str(onnx_path), "--slice", "4000", "--out", str(tmp_path / "x")])
    assert code == 2 and "larger than the image" in capsys.readouterr().err
