"""The OpenVINO/NNCF INT8 IR (default mode) of the person model: its float box convolutions and
metadata, the uint8 letterbox it takes by default (against the same IR taking floats, an IR written
before `input_kind`, wrong inputs), and the INT8 kernels the CPU plugin runs for it. Tolerances:
helpers/quantize.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.quantize import (CONF, IMGSZ, assert_close, calib, detections, needs_openvino, needs_shared,  # noqa: F401
                              person)
from test_export import IMAGES

from mhyolo.infer.preprocess import model_input

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'mhyolo[deploy]')")

from mhyolo.deploy.check import read_images  # noqa: E402
from mhyolo.infer.onnx_metadata import read_onnx_metadata  # noqa: E402


@pytest.fixture(scope="module")
def person_ov_int8(person, calib, tmp_path_factory):
    """The NNCF default INT8 IR of `person` (taking the uint8 letterbox), made once for the tests that read it."""
    from mhyolo.deploy.quantize_openvino import quantize_openvino

    return quantize_openvino(person, tmp_path_factory.mktemp("ov_int8") / "person.xml", calib)


@pytest.fixture(scope="module")
def person_ov_float(person, calib, tmp_path_factory):
    """The same INT8 IR taking the float batch as exported (same calibration, same NNCF settings)."""
    from mhyolo.deploy.quantize_openvino import quantize_openvino

    return quantize_openvino(person, tmp_path_factory.mktemp("ov_float") / "person.xml", calib,
                             input_kind="float32_rgb_nchw")


@needs_shared
@needs_openvino
def test_openvino_int8_default(person, calib, person_ov_int8):
    from mhyolo.deploy.quantize_openvino import fake_quantize_count, float_convolutions
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    xml = person_ov_int8
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    # every conv takes INT8 input except the three that write the box logits (NNCF's ignored scope)
    assert fake_quantize_count(xml) > 60
    assert sorted(float_convolutions(xml)) == [f"/adapters.24/box.{i}/Conv/WithoutBiases" for i in range(3)]
    int8 = OpenVinoBackend(xml, precision="f32")  # loads like the FP32 IR: metadata in rt_info
    assert int8.quantized and not OpenVinoBackend(person, precision="auto").quantized
    meta = int8.metadata
    assert meta.output_names == read_onnx_metadata(person).output_names and meta.type_names
    assert meta.extra["quantization"]["tool"] == "nncf" and meta.extra["quantization"]["preset"] == "mixed"
    assert len(meta.extra["quantization"]["float_convolutions"]) == 3
    # by default the IR takes the letterbox itself: uint8 BGR NHWC, said by the graph and the metadata
    assert meta.input_kind == meta.extra["quantization"]["input"] == "uint8_bgr_nhwc"
    graph_input = int8.compiled.inputs[0]
    assert graph_input.get_element_type().to_dtype() == np.uint8 and list(graph_input.get_shape()) == [1, IMGSZ,
                                                                                                        IMGSZ, 3]
    pixels = np.rint(calib[0] * 255).astype(np.uint8)[:, ::-1].transpose(0, 2, 3, 1)  # the BGR letterbox again
    assert all(v.dtype == np.float32 for v in int8.run(pixels).values())
    images = read_images(IMAGES)
    assert_close(detections(OpenVinoBackend(person, precision="f32"), images), detections(int8, images))


@needs_shared
@needs_openvino
def test_openvino_uint8_input_gives_the_float_inputdetections(person_ov_int8, person_ov_float):
    """The conversion moved into the graph (and the input's exact [0, 1] range) changes nothing a user
    sees beyond INT8 rounding: the same boxes on real photos, whichever input the IR takes; the
    predictor hands each IR its own form (uint8 letterbox or float batch)."""
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend
    from mhyolo.infer.predictor import Predictor

    u8, f32 = OpenVinoBackend(person_ov_int8, precision="auto"), OpenVinoBackend(person_ov_float, precision="auto")
    assert (u8.input_kind, f32.input_kind) == ("uint8_bgr_nhwc", "float32_rgb_nchw")
    images = read_images(IMAGES)
    assert_close(detections(f32, images), detections(u8, images))
    x_u8, _ = Predictor(u8, imgsz=IMGSZ).prepare(images[:1])
    x_f32, _ = Predictor(f32, imgsz=IMGSZ).prepare(images[:1])
    assert x_u8.dtype == np.uint8 and tuple(x_u8.shape) == (1, IMGSZ, IMGSZ, 3)
    assert x_f32.dtype == np.float32 and tuple(x_f32.shape) == (1, 3, IMGSZ, IMGSZ)
    np.testing.assert_array_equal(x_u8.transpose(0, 3, 1, 2)[:, ::-1] / np.float32(255), x_f32)  # the same pixels
    predicted = Predictor(u8, imgsz=IMGSZ, conf=CONF).predict(images)
    assert sum(len(p) for p in predicted) >= 4 and all(p.has_types for p in predicted)


@needs_shared
@needs_openvino
def test_float_input_ir_without_input_kind_still_loads_and_runs(person_ov_float, calib, tmp_path):
    """An IR written before `input_kind` existed has none in its metadata: it takes floats, as before."""
    import openvino as ov

    from mhyolo.infer.layout import METADATA_KEY
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    model = ov.Core().read_model(str(person_ov_float))
    meta = json.loads(model.get_rt_info([METADATA_KEY]).astype(str))
    del meta["input_kind"]
    model.set_rt_info(json.dumps(meta), [METADATA_KEY])
    old = tmp_path / "old.xml"
    ov.save_model(model, str(old), compress_to_fp16=False)
    backend, current = OpenVinoBackend(old, precision="auto"), OpenVinoBackend(person_ov_float, precision="auto")
    assert backend.input_kind == "float32_rgb_nchw" and model_input(backend).key == "float32_rgb_nchw"
    got, want = backend.run(calib[0]), current.run(calib[0])
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert sum(len(d) for d in detections(backend, read_images(IMAGES))) >= 4


@needs_shared
@needs_openvino
def test_uint8_input_ir_refuses_wrong_input(person_ov_int8, calib, tmp_path):
    import openvino as ov

    from mhyolo.infer.layout import METADATA_KEY
    from mhyolo.deploy.openvino_input import save_uint8_input
    from mhyolo.errors import ConfigError, WeightsError
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    backend = OpenVinoBackend(person_ov_int8, precision="auto")
    with pytest.raises(ConfigError, match=f"{person_ov_int8.name}: takes the letterboxed image as uint8 BGR "
                                          f"\\(B, {IMGSZ}, {IMGSZ}, 3\\), got float32"):
        backend.run(calib[0])
    with pytest.raises(ConfigError, match=f"expects input \\(B, {IMGSZ}, {IMGSZ}, 3\\) uint8 BGR .* got "
                                          f"\\(1, 3, {IMGSZ}, {IMGSZ}\\)"):
        backend.run(np.zeros((1, 3, IMGSZ, IMGSZ), np.uint8))
    with pytest.raises(ConfigError, match="already uint8_bgr_nhwc"):  # converted twice
        save_uint8_input(person_ov_int8, tmp_path / "twice.xml")
    model = ov.Core().read_model(str(person_ov_int8))
    meta = json.loads(model.get_rt_info([METADATA_KEY]).astype(str))
    model.set_rt_info(json.dumps({**meta, "input_kind": "uint16_planar"}), [METADATA_KEY])
    odd = tmp_path / "odd.xml"
    ov.save_model(model, str(odd), compress_to_fp16=False)
    with pytest.raises(WeightsError, match="odd.xml: input kind 'uint16_planar' unknown"):
        OpenVinoBackend(odd)
    assert not (tmp_path / "twice.xml").exists()


@needs_shared
@needs_openvino
def test_openvino_int8_runs_int8_convolution_kernels(person, person_ov_int8):
    """The executed graph, not the IR, says whether INT8 pays: its convolutions must run as 8-bit
    kernels (all but the float box convolutions), the FP32 IR's as none."""
    from mhyolo.deploy.quantize_openvino import float_convolutions
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend
    from mhyolo.machine import cpu_info

    if not cpu_info().has("avx2"):
        pytest.skip("OpenVINO's CPU plugin has INT8 convolution kernels from AVX2 up; this CPU has no AVX2")
    xml = person_ov_int8
    for precision in ("auto", "f32"):
        kernels = OpenVinoBackend(xml, precision=precision).kernels()
        assert kernels.int8_convolutions == kernels.total - len(float_convolutions(xml)) > 50, kernels.describe()
        assert all(name.endswith("_I8") for name, _ in kernels.convolutions.most_common(2)), kernels.describe()
    fp32 = OpenVinoBackend(person, precision="auto")
    assert fp32.precision == "f32" and fp32.kernels().int8_convolutions == 0
