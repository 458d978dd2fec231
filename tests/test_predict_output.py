"""What makes `mhyolo predict` fast without changing what it gives: the PyTorch model's inference form,
annotated images written beside the model calls (in order, failures still named), and OpenVINO's
precision chosen by the user."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mhyolo.cli import main
from mhyolo.commands.predict import _OrderedWriter
from mhyolo.infer.predictor import Predictor
from mhyolo.machine import cpu_info
from mhyolo.model.layers import Conv
from mhyolo.model.weights import load_model
from mhyolo.runtime.model import InferenceModel


def test_the_ordered_writer_reports_frames_in_input_order_and_holds_few() -> None:
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.01) for _ in range(30)]
    reported: list[tuple[int, bool]] = []
    most_pending = []

    def write(frame: int, prediction: str) -> bool:
        time.sleep(delays[frame])
        assert threading.current_thread() is not threading.main_thread()
        return frame % 7 != 3  # some frames cannot be written

    writer = _OrderedWriter(write, lambda frame, prediction, ok: reported.append((frame, ok)), ahead=3)
    for frame in range(30):
        writer.submit(frame, f"p{frame}")
        most_pending.append(len(writer.pending))
    writer.drain()
    writer.close()
    assert reported == [(frame, frame % 7 != 3) for frame in range(30)]
    assert max(most_pending) <= 3


def test_an_unwritable_image_is_named_and_the_other_lines_keep_their_order(
        shared: Path, official_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        cv2.imwrite(str(folder / f"{index}.jpg"), cv2.imread(str(shared / "images" / "bus.jpg")))
    out = tmp_path / "out"
    (out / "1.jpg").mkdir(parents=True)  # a folder where the annotated copy of 1.jpg would go
    code = main(["predict", str(folder), "--weights", str(official_weights), "--imgsz", "160", "--json",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == ["0.jpg", "2.jpg", "3.jpg"]
    assert f"{out / '1.jpg'}: cannot write the annotated image" in captured.err
    assert "3 images predicted, 1 failed" in captured.err
    assert all((out / f"{index}.jpg").is_file() for index in (0, 2, 3))


def test_the_inference_form_folds_batchnorm_and_predicts_the_same(shared: Path, official_weights: Path) -> None:
    plain = load_model(official_weights).eval()
    loaded = InferenceModel.load(official_weights).backend
    assert not any(isinstance(module.bn, torch.nn.BatchNorm2d) for module in loaded.modules()
                   if isinstance(module, Conv))
    assert all(param.is_contiguous(memory_format=torch.channels_last)
               for param in loaded.parameters() if param.dim() == 4)
    image = cv2.imread(str(shared / "images" / "bus.jpg"))
    (before,) = Predictor(plain, imgsz=640).predict([image])
    (after,) = Predictor(loaded, imgsz=640).predict([image])
    assert before.class_names == after.class_names
    np.testing.assert_allclose(after.scores, before.scores, atol=1e-4)
    np.testing.assert_allclose(after.boxes, before.boxes, atol=0.05)
    assert any(isinstance(module.bn, torch.nn.BatchNorm2d) for module in plain.modules()
               if isinstance(module, Conv))  # loading for training keeps the BatchNorm


def test_openvino_precision_reaches_the_plugin(shared: Path, official_weights: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ov = pytest.importorskip("openvino")
    ir = tmp_path / "coco.xml"
    assert main(["export", "--weights", str(official_weights), "--format", "openvino", "--imgsz", "160",
                 "--out", str(ir), "--images", str(shared / "images" / "bus.jpg")]) == 0
    capsys.readouterr()
    cpu = cpu_info()
    has_bf16 = cpu.has("avx512_bf16") or cpu.has("amx_bf16")  # elsewhere bf16 is not this plugin's to give
    cases = [("auto", ov.Type.f32), ("f32", ov.Type.f32)] + ([("bf16", ov.Type.bf16)] if has_bf16 else [])
    for precision, hint in cases:
        backend = InferenceModel.load(ir, precision=precision).backend
        assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == hint, precision
    args = ["predict", str(shared / "images" / "bus.jpg"), "--weights", str(ir), "--json", "--no-images"]
    assert main([*args, "--ov-precision", cases[-1][0]]) == 0
    assert json.loads(capsys.readouterr().out)["detections"]
    with pytest.raises(SystemExit):
        main([*args, "--ov-precision", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
