"""What the INT8 tests share: the person and ball models, calibration images, and how INT8
detections are compared with FP32 ones.

Tolerance for INT8 vs FP32 detections on the sample images at 320: every detection
scoring at least CONF + MARGIN on one side is found on the other with IoU > 0.8 and a
score within 0.1. Activations are rounded to 256 levels of their calibrated range
(about 1/255 of it), which moves box offsets by a fraction of a pixel per layer and
sigmoid scores by a few percent; a box shifted by a few pixels on a 100-pixel person
still has IoU > 0.9, so 0.8 and 0.1 leave room for that but not for a wrong or lost box.
Calibration uses 8 seed_balls images (what a ball model would be calibrated on), not
the test images themselves.

Fixtures are module-scoped: a test module imports the ones it uses.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import sports_ball_model
from helpers.optional import needs
from test_export import IMAGES, TYPEHEAD_CFG, WEIGHTS, typehead_person_model

from mhyolo.deploy.calibration import calibration_batches
from mhyolo.deploy.onnx_export import export_onnx
from mhyolo.infer.arrays import box_iou
from mhyolo.infer.postprocess import non_max_suppression
from mhyolo.infer.preprocess import letterbox, model_input
from mhyolo.paths import shared_dir

needs_openvino = needs("nncf", "openvino")

SEED_BALLS = shared_dir() / "data" / "seed_balls" / "data.yaml"
needs_shared = pytest.mark.skipif(not WEIGHTS.is_file() or not SEED_BALLS.is_file() or
                                  not all(p.is_file() for p in IMAGES),
                                  reason=f"shared folder absent: needs {WEIGHTS}, {SEED_BALLS} and sample images")
IMGSZ = 320
SMALL = 160  # the accuracy-aware and CLI tests: scores on a few images, speed matters more than resolution
CALIB_IMAGES = 8
CONF, MARGIN = 0.25, 0.1
MIN_IOU, SCORE_TOL = 0.8, 0.1


@pytest.fixture(scope="module")
def calib():
    if not SEED_BALLS.is_file():
        pytest.skip(f"shared data absent: {SEED_BALLS}")
    return calibration_batches(SEED_BALLS, IMGSZ, count=CALIB_IMAGES, seed=0, progress=False)


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    """The type-head person model exported at 320 (FP32 .onnx)."""
    if not WEIGHTS.is_file():
        pytest.skip(f"official weights absent: {WEIGHTS}")
    folder = tmp_path_factory.mktemp("quant")
    return export_onnx(typehead_person_model(), folder / "person.onnx", imgsz=IMGSZ).path


def ball_model(typed: bool = False):
    """Official YOLOv5n cut down to COCO's "sports ball": a real ball detector whose mAP on
    seed_balls is far from 0, so a quantization that breaks it shows. `typed` adds the
    per-object type head (seeded random weights: its scores exist, they are not meant to be good)."""
    return sports_ball_model(WEIGHTS, TYPEHEAD_CFG if typed else "yolov5n")


def detections(backend, images):
    """NMS'd detections of `images`, each backend fed the input form it takes (`model_input`)."""
    x = model_input(backend).from_letterbox([letterbox(image, IMGSZ)[0] for image in images])
    return non_max_suppression(backend.predict(x)["detection"], CONF, 0.45)


def assert_close(reference, candidate):
    """Each confident box on either side has a partner of the same class (IoU, score)."""
    total = 0
    for ref, cand in zip(reference, candidate):
        for a, b, side in ((ref, cand, "FP32"), (cand, ref, "INT8")):
            iou = box_iou(a.boxes, b.boxes) if len(a) and len(b) else np.zeros((len(a), len(b)), np.float32)
            for i in range(len(a)):
                if float(a.scores[i]) < CONF + MARGIN:
                    continue
                total += 1
                same = b.classes == a.classes[i]
                scores = np.where(same, iou[i], 0.0) if len(b) else iou[i]
                assert len(b) and float(scores.max()) > MIN_IOU, f"{side} box {a.boxes[i].tolist()} has no partner"
                j = int(scores.argmax())
                assert abs(float(a.scores[i]) - float(b.scores[j])) < SCORE_TOL, (
                    f"{side} score {float(a.scores[i]):.3f} vs {float(b.scores[j]):.3f}")
    assert total >= 4  # the sample images hold several confident persons: the test compared something
