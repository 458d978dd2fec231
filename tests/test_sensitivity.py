"""Per-block activation SQNR (mhyolo.deploy.sensitivity) on a graph whose noisy block is known.

Two parallel 1x1 convs read the same input. Input channel 2 is zero except in one
calibration image, where it is 100; block `/noisy/` reads that channel with weight 10,
block `/clean/` ignores it. Min-max calibration stretches `/noisy/`'s INT8 range to
~1000 for that one image, so on ordinary images (values ~1) it is left with a level or
two, as the outlier-ranged blocks of a real detector are. `/clean/` keeps a range that
fits. A ranking that did not measure each tensor against its own Quantize/Dequantize
could not tell them apart (both see the same quantized input).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'mhyolo[deploy]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mhyolo.deploy.sensitivity import block_noise, block_of, noisy_blocks, nodes_in_blocks  # noqa: E402


def _two_branch_model(path):
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)
    clean[:, 2] = 0  # ignores the outlier channel
    noisy = clean.copy()
    noisy[:, 2] = 10  # reads it
    nodes = [
        helper.make_node("Conv", ["x", "w_noisy"], ["noisy_out"], name="/noisy/conv/Conv"),
        helper.make_node("Conv", ["x", "w_clean"], ["clean_out"], name="/clean/conv/Conv"),
        helper.make_node("Add", ["noisy_out", "clean_out"], ["y"], name="Add"),
    ]
    graph = helper.make_graph(
        nodes, "two_branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(noisy, "w_noisy"), numpy_helper.from_array(clean, "w_clean")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


def _images(count: int, seed: int, outlier: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = [rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(count)]
    for image in images:
        image[:, 2] = 0
    if outlier:
        images[0][:, 2] = 100
    return images


def test_block_of_groups_a_conv_with_its_activation():
    assert block_of("/layers.1/conv/Conv") == block_of("/layers.1/act/Mul") == "/layers.1/"
    assert block_of("/layers.2/cv1/conv/Conv") == "/layers.2/cv1/"
    assert block_of("Conv_12") == "Conv_12" and block_of("/Concat") == "/Concat"


def test_block_noise_finds_the_block_with_an_outlier_channel(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    float_path, qdq_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _two_branch_model(float_path)
    calib = _images(5, seed=1, outlier=True)
    batches = _images(4, seed=2)

    class Reader:
        def __init__(self):
            self.items = iter(calib)

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {"x": batch}

    quantize_static(str(float_path), str(qdq_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    noise = block_noise(float_path, qdq_path, "x", batches)
    by_block = {b.block: b.sqnr_db for b in noise}
    assert {"/noisy/", "/clean/"} <= set(by_block)
    assert noise[0].block == "/noisy/"  # worst first
    assert by_block["/clean/"] - by_block["/noisy/"] > 10  # dB: the outlier costs the small channels
    threshold = (by_block["/clean/"] + by_block["/noisy/"]) / 2
    selected = [b.block for b in noisy_blocks(noise, threshold)]
    assert "/noisy/" in selected and "/clean/" not in selected  # (the Add after it inherits its range)
    model = onnx.load(str(float_path))
    assert nodes_in_blocks(model, ["/noisy/"]) == ["/noisy/conv/Conv"]
