"""The type seam: every kind of type source on the same hand-made detections, applied after
one NMS per image, the same way by the predictor, validation and the export check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mhyolo.infer.inference as inference_module
from mhyolo.infer.inference import Inference
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.types import TYPE_SOURCES, ClassTypes, ImageHeadTypes, ObjectHeadTypes

TYPE_NAMES = ["basketball", "football", "tennis-ball"]

# Three rows per image, in input pixels: row 1 overlaps row 0 (IoU 0.82) with a lower score and
# is suppressed (same class); row 2 stands apart. Class columns: three classes, so the nc=3 reading has
# something to say (row 0 -> class 2, row 2 -> class 1).
ROWS = [[100.0, 100.0, 40.0, 40.0, 0.9, 0.1, 0.2, 0.7],
        [102.0, 101.0, 40.0, 40.0, 0.8, 0.1, 0.3, 0.6],
        [300.0, 200.0, 30.0, 30.0, 0.7, 0.2, 0.6, 0.2]]
# per-row type probabilities: row 0 -> football, row 1 -> basketball (suppressed), row 2 -> tennis-ball
OBJECT_TYPES = [[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.2, 0.1, 0.7]]
IMAGE_TYPES = [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]  # image 0 -> basketball, image 1 -> tennis-ball


class HandMadeBackend:
    """Fixed outputs for a batch of two 416x416 inputs: detections plus the chosen type output."""

    stride = torch.tensor([8.0, 16.0, 32.0])
    type_names = TYPE_NAMES

    def __init__(self, output: str | None, names: list[str] | None = None) -> None:
        self.output = output
        self.names = names or ["ball"]

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        batch = x.shape[0]
        rows = torch.tensor([ROWS] * batch)
        if len(self.names) == 1:  # one class: obj x cls with cls = 1
            rows = torch.cat([rows[..., :5], torch.ones(batch, 3, 1)], dim=-1)
        out = {"detection": rows}
        if self.output == "type":
            out["type"] = torch.tensor([OBJECT_TYPES] * batch)
        elif self.output == "image_type":
            out["image_type"] = torch.tensor(IMAGE_TYPES[:batch])
        return out


def _run(backend, **options):
    inference = Inference(backend, conf=0.25, iou=0.45, **options)
    return inference, inference.run(torch.zeros(2, 3, 416, 416))


def test_each_head_source_types_the_same_kept_boxes_as_worked_out_by_hand() -> None:
    inference, kept = _run(HandMadeBackend("type"))
    assert isinstance(inference.source, ObjectHeadTypes)
    for item in kept:
        assert item.det.indices.tolist() == [0, 2]  # row 1 suppressed
        assert item.types.ids.tolist() == [1, 2]  # the types of rows 0 and 2, not of row 1
        np.testing.assert_allclose(item.types.scores, [0.8, 0.7], rtol=1e-6)
        assert item.types.image_type is None

    inference, kept = _run(HandMadeBackend("image_type"))
    assert isinstance(inference.source, ImageHeadTypes)
    assert [item.types.ids.tolist() for item in kept] == [[0, 0], [2, 2]]
    assert [item.types.image_type for item in kept] == [0, 2]
    np.testing.assert_allclose(kept[1].types.scores, [0.8, 0.8], rtol=1e-6)

    # an nc=3 detector: types are its classes, only where asked
    inference, kept = _run(HandMadeBackend(None, names=TYPE_NAMES), classes_as_types=True)
    assert isinstance(inference.source, ClassTypes)
    assert kept[0].det.indices.tolist() == [0, 2]
    assert kept[0].types.ids.tolist() == [2, 1]
    assert kept[0].types.scores.tolist() == [1.0, 1.0]  # x 1: the detection score alone ranks the box
    inference, kept = _run(HandMadeBackend(None, names=TYPE_NAMES))
    assert inference.source is None and kept[0].types is None


def test_a_detector_without_types_gets_none_and_a_bad_type_output_is_named() -> None:
    inference, kept = _run(HandMadeBackend(None))
    assert inference.source is None
    assert all(item.types is None for item in kept)

    class FourD(HandMadeBackend):
        def predict(self, x):
            out = super().predict(x)
            out["type"] = torch.zeros(2, 3, 3, 1)
            return out

    with pytest.raises(ValueError, match="'type' output must be"):
        _run(FourD(None))


def test_sources_are_registered_by_key_in_priority_order() -> None:
    assert {"object_head", "image_head", "classes"} <= set(TYPE_SOURCES)
    order = sorted(TYPE_SOURCES.values(), key=lambda c: c.priority)
    keys = [c.key for c in order]
    assert keys.index("object_head") < keys.index("image_head") < keys.index("classes")


class _Counter:
    """Wraps the NMS function and counts the images it was run on."""

    def __init__(self, function) -> None:
        self.function = function
        self.images = 0

    def __call__(self, pred, *args, **kwargs):
        self.images += int(pred.shape[0]) if pred.ndim == 3 else 1
        return self.function(pred, *args, **kwargs)


@pytest.fixture
def nms_counter(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    counter = _Counter(inference_module.non_max_suppression)
    monkeypatch.setattr(inference_module, "non_max_suppression", counter)
    return counter


def test_the_predictor_runs_nms_once_per_image(nms_counter: _Counter) -> None:
    images = [np.full((416, 416, 3), 40, np.uint8) for _ in range(5)]
    predictions = Predictor(HandMadeBackend("type"), imgsz=416, batch_size=2).predict(images)
    assert nms_counter.images == 5
    assert [p.type_names for p in predictions] == [["football", "tennis-ball"]] * 5


def test_validation_runs_nms_once_per_image(nms_counter: _Counter, shared: Path, tmp_path: Path) -> None:
    from helpers.tiny_data import tiny_ball_dataset

    from mhyolo.data.dataset import YoloDataset
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import validate

    spec = load_data_spec(tiny_ball_dataset(shared, tmp_path / "data", per_type_train=1, per_type_val=2))
    dataset = YoloDataset(spec, "val", 416, augment=None)
    result = validate(HandMadeBackend("type"), dataset, list(spec.names), batch_size=4, progress=False)
    assert nms_counter.images == len(dataset) == 6
    assert result.types is not None and result.types.type_names == TYPE_NAMES
