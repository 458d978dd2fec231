"""INT8 quantization: calibration images, ONNX Runtime static QDQ, OpenVINO/NNCF accuracy-aware
mode and `mhyolo quantize`, on real images and the official weights (the NNCF default IR itself, its
uint8 input and the kernels it runs: test_openvino_int8.py; tolerances: helpers/quantize.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.quantize import (CALIB_IMAGES, IMGSZ, SEED_BALLS, SMALL, assert_close, ball_model, calib,  # noqa: F401
                              detections, needs_openvino, needs_shared, person)
from helpers.tiny_data import tiny_ball_dataset
from test_export import IMAGES, WEIGHTS

from mhyolo.cli import main
from mhyolo.data.image_file import read_image
from mhyolo.data.pairing import split_images
from mhyolo.data.spec import load_data_spec
from mhyolo.errors import DataError
from mhyolo.infer.preprocess import letterbox, to_float_batch
from mhyolo.paths import shared_dir

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'mhyolo[deploy]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")

from mhyolo.deploy.calibration import calibration_batches, calibration_files, calibration_images_uint8  # noqa: E402
from mhyolo.deploy.check import read_images  # noqa: E402
from mhyolo.deploy.onnx_export import export_onnx  # noqa: E402
from mhyolo.infer.onnx_metadata import read_onnx_metadata  # noqa: E402
from mhyolo.deploy.quantize_ort import op_coverage, quantize_onnx_static  # noqa: E402
from mhyolo.runtime.load import load_backend  # noqa: E402
from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402


@pytest.fixture(scope="module")
def person_int8(person, calib):
    """Every block INT8 (no SQNR fallback), so which ops stay float is known exactly."""
    return quantize_onnx_static(person, person.with_name("person_int8.onnx"), calib, progress=False, min_sqnr_db=None)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    if not SEED_BALLS.is_file():
        pytest.skip(f"shared data absent: {SEED_BALLS}")
    return tiny_ball_dataset(shared_dir(), tmp_path_factory.mktemp("tiny"), per_type_train=3, per_type_val=1)


@pytest.fixture(scope="module")
def ball_onnx(tmp_path_factory):
    if not WEIGHTS.is_file():
        pytest.skip(f"official weights absent: {WEIGHTS}")
    return export_onnx(ball_model(), tmp_path_factory.mktemp("ball") / "ball.onnx", imgsz=SMALL).path


@needs_shared
def test_calibration_images_are_seeded_letterboxed_train_images(tmp_path):
    files = calibration_files(SEED_BALLS, 5, seed=3)
    assert files == calibration_files(SEED_BALLS, 5, seed=3) and files != calibration_files(SEED_BALLS, 5, seed=4)
    train = set(split_images(load_data_spec(SEED_BALLS), "train"))
    assert len(set(files)) == 5 and set(files) <= train
    raw = calibration_images_uint8(SEED_BALLS, 96, count=5, seed=3, progress=False)
    batches = calibration_batches(SEED_BALLS, 96, count=5, seed=3, progress=False)
    expected, _ = letterbox(read_image(files[0]), 96)  # RGB, as the inference pre-processing gives
    assert raw[0].shape == (1, 96, 96, 3) and raw[0].dtype == np.uint8
    np.testing.assert_array_equal(raw[0][0], expected)
    assert batches[0].shape == (1, 3, 96, 96) and batches[0].dtype == np.float32
    np.testing.assert_allclose(batches[0][0], expected.transpose(2, 0, 1) / 255.0, atol=1e-6)
    bgr = letterbox(read_images([files[0]])[0], 96)[0]
    np.testing.assert_allclose(batches[0], to_float_batch([bgr]), atol=1e-6)  # same as prediction's input
    # a split with fewer images than asked gives all of them; nothing to draw is an error
    data = tiny_ball_dataset(shared_dir(), tmp_path / "tiny", per_type_train=1, per_type_val=1)
    assert len(calibration_files(data, 50)) == 3
    with pytest.raises(DataError, match="must be positive"):
        calibration_files(data, 0)


@needs_shared
def test_ort_int8_quantizes_every_op_and_keeps_outputs_float(person, person_int8):
    coverage = op_coverage(onnx.load(str(person_int8)))
    # the whole backbone and neck run in INT8, not only the convs ...
    for op in ("Conv", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize"):
        assert coverage.quantized_ops[op] > 0, coverage.summary()
    assert coverage.quantize_linear > 150
    # ... and only the final sigmoids stay float, with the three 1x1 convs that write the box logits
    # (the type logits leave the graph from a quantized conv, dequantized, like the score logits)
    assert dict(coverage.float_ops) == {"Sigmoid": 6, "Conv": 3}, coverage.summary()
    int8_graph = onnx.load(str(person_int8)).graph
    producer = {out: node for node in int8_graph.node for out in node.output}
    float_weights = {i.name for i in int8_graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for output in (o.name for o in int8_graph.output if o.name.startswith("boxes_")):
        conv = producer[producer[output].input[0]]  # boxes_pN <- Sigmoid <- Conv
        assert conv.op_type == "Conv" and conv.input[1] in float_weights, output
    fp32_ops = {node.op_type for node in onnx.load(str(person)).graph.node}
    assert set(coverage.quantized_ops) | set(coverage.float_ops) <= fp32_ops
    assert set(coverage.output_types.values()) == {"FLOAT"}
    backend = load_backend(person_int8)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert all(o.type == "tensor(float)" for o in backend.session.get_outputs())
    outputs = backend.run(np.zeros((1, 3, IMGSZ, IMGSZ), np.float32))
    assert all(v.dtype == np.float32 for v in outputs.values())
    # metadata survive: the INT8 file reads back like the FP32 one, plus how it was made
    fp32_meta, int8_meta = read_onnx_metadata(person), read_onnx_metadata(person_int8)
    assert int8_meta.output_names == fp32_meta.output_names and int8_meta.type_names == fp32_meta.type_names
    assert int8_meta.anchors_px == fp32_meta.anchors_px and int8_meta.imgsz == IMGSZ
    quant = int8_meta.extra["quantization"]
    assert quant["tool"] == "onnxruntime" and quant["calibration_images"] == CALIB_IMAGES
    assert quant["pre_processed"] is True
    # the weight range was chosen for this machine's CPU, and the file says so
    from mhyolo.machine import cpu_info, ort_weight_range

    chosen = ort_weight_range(cpu_info())
    assert quant["reduce_range"] is chosen.reduce_range and quant["weight_range"].endswith(chosen.reason)
    assert quant["quantized_on"] == cpu_info().describe()
    assert person_int8.stat().st_size < person.stat().st_size / 2.5  # INT8 weights


@needs_shared
def test_ort_int8_keeps_noisy_blocks_float(person, calib, tmp_path):
    from mhyolo.deploy.sensitivity import nodes_in_blocks

    threshold = 33.0  # above what the first few YOLOv5n blocks reach on 8 ball images: some are kept float
    out = quantize_onnx_static(person, tmp_path / "sqnr.onnx", calib, progress=False, min_sqnr_db=threshold)
    quant = read_onnx_metadata(out).extra["quantization"]
    blocks = quant["float_blocks"]
    assert quant["min_sqnr_db"] == threshold and len(blocks) >= 2
    assert all(b["sqnr_db"] < threshold for b in blocks), [b for b in blocks if not b["sqnr_db"] < threshold]
    assert [b["sqnr_db"] for b in blocks] == sorted(b["sqnr_db"] for b in blocks)  # worst first
    float_graph = onnx.load(str(person))
    kept = nodes_in_blocks(float_graph, [b["block"] for b in blocks])
    kept_convs = sum(node.op_type == "Conv" for node in float_graph.graph.node if node.name in kept)
    assert kept_convs >= 2
    coverage = op_coverage(onnx.load(str(out)))
    assert coverage.float_ops["Conv"] == 3 + kept_convs, coverage.summary()  # box convs + the kept blocks
    # a threshold below every block's SQNR keeps none, and the file says so
    none = quantize_onnx_static(person, tmp_path / "none.onnx", calib, progress=False, min_sqnr_db=1.0)
    assert read_onnx_metadata(none).extra["quantization"]["float_blocks"] == []
    assert op_coverage(onnx.load(str(none))).float_ops["Conv"] == 3


@needs_shared
def test_ort_int8_keeps_named_blocks_float(person, calib, tmp_path):
    from mhyolo.errors import ConfigError

    out = quantize_onnx_static(person, tmp_path / "named.onnx", calib, progress=False,
                               float_blocks=["/layers.1/", "/layers.2/cv1/"])
    coverage = op_coverage(onnx.load(str(out)))
    assert coverage.float_ops["Conv"] == 3 + 2, coverage.summary()  # box convs + one conv per block
    assert coverage.float_ops["Mul"] == 2 and coverage.float_ops["Sigmoid"] == 6 + 2  # their SiLUs
    quant = read_onnx_metadata(out).extra["quantization"]
    assert quant["requested_float_blocks"] == ["/layers.1/", "/layers.2/cv1/"]
    assert "/layers.1/conv/Conv" in quant["float_nodes"]
    with pytest.raises(ConfigError, match="no block named /layers.99/"):
        quantize_onnx_static(person, tmp_path / "x.onnx", calib, progress=False, float_blocks=["/layers.99/"])


@needs_shared
def test_ort_int8_detections_match_fp32(person, person_int8):
    images = read_images(IMAGES)
    assert_close(detections(OnnxRuntimeBackend(person), images), detections(OnnxRuntimeBackend(person_int8), images))


@needs_shared
def test_ort_quantize_rejects_wrong_calibration(person, tmp_path):
    from mhyolo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\(1, 3, 320, 320\)"):
        quantize_onnx_static(person, tmp_path / "x.onnx", [np.zeros((1, 3, 64, 64), np.float32)])
    with pytest.raises(ConfigError, match="calibration method"):
        quantize_onnx_static(person, tmp_path / "x.onnx", [np.zeros((1, 3, 320, 320), np.float32)], method="mse")


@needs_shared
def test_ort_percentile_calibration_without_pre_processing(ball_onnx, tiny_data, tmp_path):
    calib = calibration_batches(tiny_data, SMALL, count=4, progress=False)
    out = quantize_onnx_static(ball_onnx, tmp_path / "p.onnx", calib, method="percentile", preprocess=False,
                               progress=False, min_sqnr_db=None)
    quant = read_onnx_metadata(out).extra["quantization"]
    assert quant["method"] == "percentile" and quant["pre_processed"] is False
    coverage = op_coverage(onnx.load(str(out)))
    assert dict(coverage.float_ops) == {"Sigmoid": 6, "Conv": 3} and coverage.quantized_ops["Mul"] > 0
    fp32, int8 = OnnxRuntimeBackend(ball_onnx).run(calib[0]), OnnxRuntimeBackend(out).run(calib[0])
    for name, value in fp32.items():  # probabilities: INT8 stays near FP32 on a calibration image
        assert int8[name].dtype == np.float32 and np.abs(int8[name] - value).mean() < 0.02, name


@needs_shared
@needs_openvino
@pytest.mark.slow
def test_openvino_accuracy_aware_keeps_our_metric_within_max_drop(ball_onnx, tiny_data, tmp_path):
    import openvino as ov

    from mhyolo.deploy.quantize_openvino import accuracy_target, quantize_openvino

    meta = read_onnx_metadata(ball_onnx)
    target = accuracy_target(tiny_data, meta)
    assert target.metric == "map50_95" and len(target.items) == 3
    core = ov.Core()
    fp32_score = target.fn(core.compile_model(str(ball_onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                           target.items)
    assert fp32_score > 0.1  # the sports-ball detector finds these balls: the metric can drop
    calib = calibration_batches(tiny_data, SMALL, count=CALIB_IMAGES, progress=False)
    max_drop = 0.01
    calls = []

    def validate_fn(compiled, items):  # NNCF must score with our metric, on our validation items
        items = list(items)
        calls.append(items)
        return target.fn(compiled, items)

    xml = quantize_openvino(ball_onnx, tmp_path / "acc.xml", calib, mode="accuracy", validate_fn=validate_fn,
                            validation_data=target.items, max_drop=max_drop, ranking_subset_size=2)
    assert len(calls) >= 2 and all(set(c) <= set(target.items) for c in calls)  # FP32 and INT8 at least
    compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert target.fn(compiled, target.items) >= fp32_score - max_drop - 1e-9
    quant = load_backend(xml).metadata.extra["quantization"]
    assert quant["mode"] == "accuracy" and quant["max_drop"] == max_drop


@needs_shared
def test_cli_quantize_ort_writes_model_and_scores(ball_onnx, tiny_data, tmp_path, capsys):
    out = tmp_path / "q" / "ball_int8.onnx"
    code = main(["quantize", "--weights", str(ball_onnx), "--backend", "ort", "--calib", str(tiny_data),
                 "--out", str(out), "--calib-images", "6", "--min-sqnr", "0"])
    assert code == 0
    assert out.is_file() and read_onnx_metadata(out).extra["quantization"]["calibration_images"] == 6
    report = json.loads((tmp_path / "q" / "ball_int8.quant.json").read_text())
    assert report["weight_range"].startswith("chosen for this CPU: ")
    assert "weight range: chosen for this CPU" in capsys.readouterr().err
    fp32, int8 = report["rows"]
    assert fp32["format"] == "fp32 ort" and int8["format"] == "int8 ort"
    assert fp32["map50_95"] > 0.1 and int8["map50_95"] is not None and int8["map50"] > 0
    assert report["delta"]["map50_95"] == pytest.approx(int8["map50_95"] - fp32["map50_95"])
    assert int8["size_mb"] < fp32["size_mb"] and report["op_coverage"]["quantize_linear"] > 150
    assert report["calibration"] == {"split": "train", "images": 6, "seed": 0, "method": "minmax"}
    assert report["float_blocks"] == [] and report["op_coverage"]["float_ops"] == {"Sigmoid": 6, "Conv": 3}
    # scores equal what `mhyolo val` computes for each file
    for row in (fp32, int8):
        assert main(["val", "--data", str(tiny_data), "--weights", row["path"], "--json"]) == 0
        val = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert val["map50_95"] == pytest.approx(row["map50_95"]) and val["map50"] == pytest.approx(row["map50"])
    # a --min-sqnr above some blocks' SQNR keeps those float, and the report names them
    noisy = tmp_path / "q" / "ball_sqnr.onnx"
    assert main(["quantize", "--weights", str(ball_onnx), "--backend", "ort", "--calib", str(tiny_data),
                 "--out", str(noisy), "--calib-images", "6", "--min-sqnr", "36"]) == 0
    kept = json.loads(noisy.with_suffix(".quant.json").read_text())
    assert kept["float_blocks"] and all(b["sqnr_db"] < 36 for b in kept["float_blocks"])
    assert kept["op_coverage"]["float_ops"]["Conv"] > 3  # the box convs and the kept blocks' convs
    assert kept["op_coverage"]["quantize_linear"] < report["op_coverage"]["quantize_linear"]


@needs_shared
@needs_openvino
def test_cli_quantize_openvino_reports_type_scores(tiny_data, tmp_path, capsys):
    weights = export_onnx(ball_model(typed=True), tmp_path / "typed.onnx", imgsz=SMALL).path
    out = tmp_path / "typed_int8.xml"
    assert main(["quantize", "--weights", str(weights), "--backend", "openvino", "--calib", str(tiny_data),
                 "--out", str(out), "--calib-images", "4"]) == 0
    report = json.loads(out.with_suffix(".quant.json").read_text())
    assert report["mode"] == "default" and report["fake_quantize_nodes"] > 60
    assert report["input"] == "uint8_bgr_nhwc"  # scored through validation's uint8 batches
    fp32, int8 = report["rows"]
    assert (fp32["format"], int8["format"]) == ("fp32 openvino", "int8 openvino")
    for key in ("map50", "map50_95", "cls_accuracy", "typed_map50", "typed_map50_95"):
        assert isinstance(fp32[key], float) and isinstance(int8[key], float), key
        assert report["delta"][key] == pytest.approx(int8[key] - fp32[key])
    assert fp32["map50"] > 0.3  # the detector finds the balls, so the type scores are over real matches
    assert int8["size_mb"] < fp32["size_mb"] / 2.5
    table = capsys.readouterr().out
    assert "cls_accuracy" in table and "typed_map50" in table and "int8 openvino" in table


@needs_shared
def test_cli_quantize_refuses_bad_arguments(ball_onnx, tiny_data, tmp_path, capsys):
    base = ["quantize", "--weights", str(ball_onnx), "--calib", str(tiny_data)]
    assert main(base + ["--backend", "ort", "--out", str(tmp_path / "m.xml")]) == 2
    assert "writes a .onnx file" in capsys.readouterr().err
    assert main(base + ["--backend", "ort", "--out", str(tmp_path / "m.onnx"), "--mode", "accuracy"]) == 2
    assert "use --backend openvino" in capsys.readouterr().err
    assert main(base + ["--backend", "ort", "--out", str(tmp_path / "m.onnx"), "--imgsz", "640"]) == 2
    assert f"exported for --imgsz {SMALL}, not 640" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@needs_shared
@needs_openvino
def test_accuracy_aware_items_leave_out_ball_free_images(ball_onnx, tiny_data, tmp_path):
    import shutil

    from mhyolo.deploy.quantize_openvino import accuracy_target

    data = tmp_path / "with-negative"
    shutil.copytree(Path(tiny_data).parent, data)
    first = sorted((data / "images" / "val").iterdir())[0]
    shutil.copy(first, data / "images" / "val" / "negative_0001.jpg")
    (data / "labels" / "val" / "negative_0001.txt").write_text("")
    target = accuracy_target(data / "data.yaml", read_onnx_metadata(ball_onnx))
    assert len(target.items) == 3  # 4 val images, one without a ball: NNCF may score items one by one
