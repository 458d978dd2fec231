"""Throughput mode (`mhyolo.infer.stream`): frames predicted with model calls overlapped come back in
input order with the very predictions of one-at-a-time prediction, in every runtime.

The model is YOLOv5n with the official weights cut down to COCO's person class and a random type
head (`test_export.typehead_person_model`), on seed-ball photos and the two sample photos.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_export import typehead_person_model

from mhyolo.cli import main
from mhyolo.errors import ConfigError
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.stream import InlineCalls, OpenVinoRequests, StreamPredictor, ThreadedCalls, model_calls

IMGSZ = 320


@pytest.fixture(scope="module")
def folder(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five real photos of different sizes and, among them, a file that is not an image."""
    out = tmp_path_factory.mktemp("photos")
    photos = sorted((shared / "data" / "seed_balls" / "images").glob("*.jpg"))[:3]
    photos += [shared / "images" / "bus.jpg", shared / "images" / "zidane.jpg"]
    if len(photos) < 5 or not all(p.is_file() for p in photos):
        pytest.skip("seed_balls photos or the sample images are absent")
    for i, photo in enumerate(photos):
        shutil.copyfile(photo, out / f"{i:02d}_{photo.name}")
    (out / "02b_broken.jpg").write_bytes(b"not a jpeg")
    return out


@pytest.fixture(scope="module")
def models(official_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same model as a checkpoint, an ONNX graph and an OpenVINO IR (taking floats, and taking the
    uint8 letterbox)."""
    pytest.importorskip("onnxruntime")
    from mhyolo.deploy.onnx_export import export_onnx, export_openvino
    from mhyolo.model.weights import save_checkpoint

    out = tmp_path_factory.mktemp("models")
    model = typehead_person_model()
    files = {"pytorch": save_checkpoint(out / "person.safetensors", model),
             "onnxruntime": export_onnx(model, out / "person.onnx", imgsz=IMGSZ).path}
    try:
        files["openvino"] = export_openvino(files["onnxruntime"], out / "ir" / "person.xml")
        from mhyolo.deploy.openvino_input import save_uint8_input

        files["openvino-uint8"] = save_uint8_input(files["openvino"], out / "ir_u8" / "person.xml")
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    return files


def _predict(capsys, source: Path, weights: Path, out: Path, *extra: str) -> tuple[int, list[dict], str]:
    code = main(["predict", str(source), "--weights", str(weights), "--imgsz", str(IMGSZ), "--conf", "0.1",
                 "--out", str(out), "--json", *extra])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")], captured.err


@pytest.mark.parametrize("runtime", ["pytorch", "onnxruntime", "openvino", "openvino-uint8"])
def test_throughput_predict_writes_what_one_at_a_time_writes(runtime, models, folder, tmp_path, capsys):
    if runtime not in models:
        pytest.skip("openvino is not installed")
    weights = models[runtime]
    sequential = _predict(capsys, folder, weights, tmp_path / "one", "--no-throughput")
    streamed = _predict(capsys, folder, weights, tmp_path / "stream")
    three = _predict(capsys, folder, weights, tmp_path / "three", "--streams", "3")
    assert sequential[0] == streamed[0] == three[0] == 1  # the broken file: exit code 1, the others written
    assert streamed[1] == sequential[1] and three[1] == sequential[1]
    assert [line["image"] for line in streamed[1]] == sorted(p.name for p in folder.iterdir() if "broken" not in p.name)
    assert sum(len(line["detections"]) for line in streamed[1]) >= 8, "the people on the sample photos"
    assert all("type_name" in d for line in streamed[1] for d in line["detections"])
    for err in (streamed[2], sequential[2]):
        assert "02b_broken.jpg: cannot decode image" in err and "5 images predicted, 1 failed" in err
    for name in sorted(p.name for p in (tmp_path / "one").iterdir()):  # the annotated copies too
        assert np.array_equal(cv2.imread(str(tmp_path / "one" / name)), cv2.imread(str(tmp_path / "stream" / name)))


def test_throughput_predict_on_a_video_keeps_every_frame_in_order(models, shared, tmp_path, capsys):
    frames = [cv2.imread(str(shared / "images" / name)) for name in ("bus.jpg", "bus.jpg", "zidane.jpg")]
    height, width = frames[0].shape[:2]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (width, height))
    for frame in frames:
        writer.write(cv2.resize(frame, (width, height)))
    writer.release()
    sequential = _predict(capsys, video, models["onnxruntime"], tmp_path / "one", "--no-throughput")
    streamed = _predict(capsys, video, models["onnxruntime"], tmp_path / "stream")
    assert sequential[0] == streamed[0] == 0
    assert [line["image"] for line in streamed[1]] == ["clip.mp4:0", "clip.mp4:1", "clip.mp4:2"]
    assert streamed[1] == sequential[1]
    assert all(line["detections"] for line in streamed[1])  # people in every frame


class SlowFirstBackend:
    """Reports the mean brightness of its input as one box; the brighter an image, the longer its
    call takes, so calls started later finish first."""

    names = ["ball"]
    stride = torch.tensor([8.0, 16.0, 32.0])

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        brightness = float(x.mean())
        time.sleep(0.05 * brightness)
        with self.lock:
            self.running -= 1
        return {"detection": torch.tensor([[[32.0, 32.0, 10.0, 10.0, 0.5 + 0.4 * brightness, 1.0]]])}


def test_results_come_back_in_input_order_when_later_calls_finish_first():
    backend = SlowFirstBackend()
    predictor = Predictor(backend, imgsz=64)
    images = [np.full((64, 64, 3), value, np.uint8) for value in (250, 200, 150, 100, 50, 0, 255, 5)]
    expected = [predictor.predict([image])[0].scores.tolist() for image in images]
    stream = StreamPredictor(predictor)
    assert isinstance(stream.calls, InlineCalls)  # a runtime it knows nothing of: called in turn
    stream.calls.close()
    stream.calls = ThreadedCalls(predictor.inference, streams=3)  # the hand-made backend is thread-safe
    stream.depth = 6
    with stream:
        got = list(stream.predict([(i, image) for i, image in enumerate(images[:3])] + [("missing", None)]
                                  + [(i, image) for i, image in enumerate(images[3:], 3)]))
    assert [key for key, _ in got] == [0, 1, 2, "missing", 3, 4, 5, 6, 7]
    assert got[3][1] is None
    assert [p.scores.tolist() for key, p in got if p is not None] == expected
    assert backend.most_at_once > 1  # the calls did overlap


def test_each_runtime_overlaps_its_own_way(models):
    from mhyolo.runtime.load import load_backend

    torch_model = load_backend(models["pytorch"])
    chosen = {name: model_calls(Predictor(load_backend(path, threads=1), imgsz=IMGSZ).inference)
              for name, path in models.items()}
    assert isinstance(chosen["pytorch"], ThreadedCalls) and isinstance(chosen["onnxruntime"], ThreadedCalls)
    assert chosen["onnxruntime"].streams == 2 and chosen["onnxruntime"].description == "2 threads"
    if "openvino" in chosen:
        assert isinstance(chosen["openvino"], OpenVinoRequests) and chosen["openvino"].streams >= 1
        assert chosen["openvino"].description.startswith("OpenVINO async")
    for calls in chosen.values():
        calls.close()
    half = model_calls(Predictor(torch_model.half(), imgsz=IMGSZ).inference)  # any PyTorch model: threads
    assert isinstance(half, ThreadedCalls)
    half.close()
    with pytest.raises(ConfigError, match="streams must be at least 1"):
        model_calls(Predictor(torch_model, imgsz=IMGSZ).inference, streams=0)
    with pytest.raises(ConfigError, match="batch size 1"):
        StreamPredictor(Predictor(torch_model, imgsz=IMGSZ, batch_size=2))


def test_uint8_input_ir_predicts_what_the_float_ir_predicts(models, folder):
    """The FP32 IR with the conversion inside the graph: the same boxes and scores as the float IR, the
    stream feeding it uint8 letterboxes."""
    if "openvino-uint8" not in models:
        pytest.skip("openvino is not installed")
    from mhyolo.runtime.load import load_backend

    images = [cv2.imread(str(p)) for p in sorted(folder.iterdir()) if "broken" not in p.name]
    floats = Predictor(load_backend(models["openvino"], threads=1), imgsz=IMGSZ, conf=0.1).predict(images)
    u8 = load_backend(models["openvino-uint8"], threads=1)
    assert u8.input_kind == "uint8_bgr_nhwc"
    with StreamPredictor(Predictor(u8, imgsz=IMGSZ, conf=0.1)) as stream:
        streamed = [p for _, p in stream.predict(enumerate(images))]
    assert sum(len(p) for p in floats) >= 8
    for a, b in zip(floats, streamed):
        assert len(a) == len(b) and a.class_ids.tolist() == b.class_ids.tolist()
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        assert a.type_ids.tolist() == b.type_ids.tolist()


@pytest.mark.parametrize("runtime, scales", [("pytorch", ["320", "native", "--merge", "size", "--flip"]),
                                             ("onnxruntime", ["320", "640", "--merge", "wbf"])])
def test_throughput_multiscale_predict_writes_what_one_at_a_time_writes(runtime, scales, models, folder, tmp_path,
                                                                        capsys):
    """Several passes per frame (each image's own size, mirrored copies; tiles of a fixed graph), all in
    flight together, merged in order: the very JSON and images of one frame at a time."""
    sequential = _predict(capsys, folder, models[runtime], tmp_path / "one", "--no-throughput", "--scales", *scales)
    streamed = _predict(capsys, folder, models[runtime], tmp_path / "stream", "--scales", *scales)
    assert sequential[0] == streamed[0] == 1  # the broken file
    assert streamed[1] == sequential[1] and sum(len(line["detections"]) for line in streamed[1]) >= 8
    assert "5 images predicted, 1 failed" in streamed[2]
    for name in sorted(p.name for p in (tmp_path / "one").iterdir()):
        assert np.array_equal(cv2.imread(str(tmp_path / "one" / name)), cv2.imread(str(tmp_path / "stream" / name)))
