"""The input forms a model may take (`infer.preprocess.ModelInput`): the dataset loader's RGB CHW batch
and the predictor's BGR letterboxes become the same input, in each form."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from mhyolo.data.dataset import YoloDataset
from mhyolo.data.spec import load_data_spec
from mhyolo.errors import ConfigError
from mhyolo.infer.preprocess import MODEL_INPUTS, FloatRgbNchw, Uint8BgrNhwc, letterbox, model_input, to_float_batch
from mhyolo.paths import shared_dir

SEED_BALLS = shared_dir() / "data" / "seed_balls" / "data.yaml"
IMGSZ = 160


@pytest.fixture(scope="module")
def samples():
    if not SEED_BALLS.is_file():
        pytest.skip(f"shared data absent: {SEED_BALLS}")
    dataset = YoloDataset(load_data_spec(SEED_BALLS), "val", IMGSZ, augment=None)
    return [dataset[i] for i in range(3)]


def test_loader_batch_and_letterboxes_give_the_same_input_in_each_form(samples):
    batch = torch.stack([s.image for s in samples])  # what validation gets: RGB CHW uint8
    boxed = [letterbox(cv2.imread(str(s.path)), IMGSZ)[0] for s in samples]  # what the predictor gets: BGR HWC
    u8 = MODEL_INPUTS["uint8_bgr_nhwc"]
    from_loader, from_predictor = u8.from_rgb_chw(batch), u8.from_letterbox(boxed)
    assert from_loader.dtype == np.uint8 and tuple(from_loader.shape) == (3, IMGSZ, IMGSZ, 3)
    np.testing.assert_array_equal(from_loader, from_predictor)
    assert from_loader.astype(np.float32).std() > 10  # real photos, not a blank canvas
    floats = MODEL_INPUTS["float32_rgb_nchw"]
    from_batch = floats.from_rgb_chw(batch.clone())
    assert from_batch.dtype == np.float32
    np.testing.assert_array_equal(from_batch, floats.from_letterbox(boxed))
    np.testing.assert_array_equal(floats.from_letterbox(boxed), to_float_batch(boxed))
    np.testing.assert_array_equal(from_batch, batch.float().div(255.0).numpy())  # as PyTorch divides
    checked = u8.check(from_loader, IMGSZ, "m.xml")
    assert checked.dtype == np.uint8 and checked.flags.c_contiguous


def test_model_input_follows_the_model():
    assert isinstance(model_input(torch.nn.Conv2d(3, 3, 1)), FloatRgbNchw)  # a PyTorch model: floats
    assert isinstance(model_input(SimpleNamespace(input_kind="uint8_bgr_nhwc")), Uint8BgrNhwc)
    with pytest.raises(ConfigError, match="m.xml: input kind 'nv12' unknown"):
        model_input(SimpleNamespace(input_kind="nv12", path="m.xml"))
    with pytest.raises(ConfigError, match="m.xml: expects input \\(B, 3, 64, 64\\) float RGB"):
        MODEL_INPUTS["float32_rgb_nchw"].check(np.zeros((1, 64, 64, 3), np.float32), 64, "m.xml")
