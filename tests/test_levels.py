"""The per-level read (`mhyolo.infer.levels`): thresholding objectness before decoding keeps exactly
the boxes, scores, classes, rows and types that decoding every row keeps.

Hand-made graph outputs cover what real ones rarely show (no row above the threshold, every row
above it, fp16 outputs, several classes, the image head, a batch); real exported models on the
sample photos cover the layouts the exporter writes, in ONNX Runtime and in PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_export import IMAGES, WEIGHTS, needs_shared, typehead_person_model

from mhyolo.infer.layout import ExportMetadata, graph_levels, reconstruct
from mhyolo.infer.backends.base import ExportedBackend, GraphLevels
from mhyolo.infer.inference import Inference
from mhyolo.infer.levels import ModelLevels, level_reader
from mhyolo.infer.postprocess import suppress
from mhyolo.infer.types import ImageHeadTypes, ObjectHeadTypes

IMGSZ = 64  # levels of 8x8, 4x4 and 2x2 cells
ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]
TYPE_NAMES = ["basketball", "football", "tennis-ball"]


def _metadata(nc: int, type_output: str | None) -> ExportMetadata:
    names = [f"c{i}" for i in range(nc)]
    return ExportMetadata(names=names, strides=[8.0, 16.0, 32.0], anchors_px=ANCHORS, imgsz=IMGSZ,
                          type_names=TYPE_NAMES if type_output else None, type_output=type_output,
                          dynamic_batch=True)


def _outputs(meta: ExportMetadata, batch: int, objectness: tuple[float, float], seed: int = 0,
             dtype=np.float32) -> dict[str, np.ndarray]:
    """Graph outputs with objectness drawn from `objectness` (low, high) and every other probability
    uniform; a few rows share one box so NMS has something to suppress."""
    rng = np.random.default_rng(seed)
    out = {}
    for stride, level in zip(meta.strides, meta.levels):
        side = int(IMGSZ // stride)
        boxes = rng.uniform(0.2, 0.8, (batch, meta.na * 4, side, side))
        boxes[:, 4:8] = boxes[:, 0:4]  # anchor 1's box sits on anchor 0's: overlapping candidates
        scores = rng.uniform(0.0, 1.0, (batch, meta.na * (1 + meta.nc), side, side))
        for a in range(meta.na):
            scores[:, a * (1 + meta.nc)] = rng.uniform(*objectness, (batch, side, side))
        out[f"boxes_{level}"], out[f"scores_{level}"] = boxes, scores
        if meta.type_output == "type":
            out[f"types_{level}"] = rng.normal(0.0, 2.0, (batch, meta.na * 3, side, side))
    if meta.type_output == "image_type":
        probs = rng.uniform(0.1, 1.0, (batch, 3))
        out["image_type"] = probs / probs.sum(1, keepdims=True)
    return {name: value.astype(dtype) for name, value in out.items()}


class FixedGraph(ExportedBackend):
    """An exported model whose graph returns fixed outputs: both reads see exactly the same arrays."""

    def __init__(self, meta: ExportMetadata, outputs: dict[str, np.ndarray]) -> None:
        super().__init__("fixed.onnx", meta)
        self.outputs = outputs

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.outputs


def _both(backend, x: torch.Tensor, conf: float, **options):
    """Kept detections per image through the per-level read and through the full decode."""
    levels = Inference(backend, conf=conf, **options)
    full = Inference(backend, conf=conf, **options)
    assert levels.reader is not None
    full.reader = None  # `predict` (the PyTorch model's own decoding, on a tensor): every row decoded, then NMS
    with torch.inference_mode():
        return levels.run(x), full.run(torch.as_tensor(x)), levels


def _torch_decode(outputs: dict[str, np.ndarray], meta: ExportMetadata) -> torch.Tensor:
    """The PyTorch model's own decoder (`decode_levels`) on graph outputs: what the NumPy read must equal."""
    from mhyolo.model.heads import decode_levels, per_anchor

    probs = [torch.cat((per_anchor(torch.from_numpy(outputs[f"boxes_{lv}"]).float(), meta.na),
                        per_anchor(torch.from_numpy(outputs[f"scores_{lv}"]).float(), meta.na)), dim=-1)
             for lv in meta.levels]
    return decode_levels(probs, torch.tensor(meta.anchors_px, dtype=torch.float32), meta.strides)


def _assert_same(kept, reference) -> None:
    assert len(kept) == len(reference)
    for got, ref in zip(kept, reference):
        for name in ("boxes", "scores", "classes", "indices"):
            a, b = getattr(got.det, name), getattr(ref.det, name)
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_array_equal(got.boxes, ref.boxes)
        assert (got.types is None) == (ref.types is None)
        if ref.types is not None:
            np.testing.assert_array_equal(got.types.ids, ref.types.ids)
            # the reference's softmax may be PyTorch's (a model's `predict`): NumPy's `exp` differs in the last bit
            np.testing.assert_allclose(got.types.scores, ref.types.scores, rtol=0, atol=3e-7)
            assert got.types.image_type == ref.types.image_type


@pytest.mark.parametrize(("nc", "type_output", "dtype"), [
    (1, "type", np.float32), (1, "type", np.float16), (3, None, np.float32), (3, "type", np.float16),
    (1, "image_type", np.float32)])
@pytest.mark.parametrize(("objectness", "conf", "expect"), [
    ((0.0, 0.2), 0.25, "none"),  # no row above the threshold
    ((0.0, 1.0), 0.25, "some"),
    ((0.05, 1.0), 0.001, "all"),  # validation's threshold: every row is a candidate
])
def test_hand_made_outputs_keep_what_the_full_decode_keeps(nc, type_output, dtype, objectness, conf, expect):
    meta = _metadata(nc, type_output)
    outputs = _outputs(meta, batch=2, objectness=objectness, dtype=dtype)
    backend = FixedGraph(meta, outputs)
    kept, reference, inference = _both(backend, torch.zeros(2, 3, IMGSZ, IMGSZ), conf)
    _assert_same(kept, reference)
    if type_output == "type":
        assert isinstance(inference.source, ObjectHeadTypes)
    elif type_output == "image_type":
        assert isinstance(inference.source, ImageHeadTypes)
    total = sum(len(k) for k in kept)
    assert (total == 0) if expect == "none" else total > 0
    # the candidates themselves: the rows above the threshold, decoded bit for bit as `decode_levels` does
    levels = graph_levels(outputs, meta)
    decoded = reconstruct(outputs, meta)["detection"]
    np.testing.assert_array_equal(decoded, _torch_decode(outputs, meta).numpy())
    for b in range(2):
        ids, rows = levels.candidates(b, conf)
        expected = np.flatnonzero(decoded[b, :, 4] > np.float32(conf))
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(rows, decoded[b, expected])
        if expect == "all":
            assert len(ids) == levels.rows == 3 * (64 + 16 + 4)


def test_fp16_objectness_is_compared_in_float32():
    """fp16 0.3 is 0.30005: above a 0.3 threshold in float32 (the full decode's reading), not in fp16."""
    meta = _metadata(1, "type")
    outputs = _outputs(meta, batch=1, objectness=(0.0, 0.2), dtype=np.float16)
    outputs["scores_p4"][0, 0:2, 1, 2] = np.float16(0.3), np.float16(1.0)  # objectness, class
    backend = FixedGraph(meta, outputs)
    kept, reference, _ = _both(backend, torch.zeros(1, 3, IMGSZ, IMGSZ), 0.3)
    _assert_same(kept, reference)
    assert kept[0].det.indices.tolist() == [3 * 64 + 1 * 4 + 2]  # level p4, anchor 0, row 1, column 2


def test_classes_as_types_and_agnostic_nms_on_hand_made_outputs():
    meta = _metadata(3, None)
    backend = FixedGraph(meta, _outputs(meta, batch=1, objectness=(0.0, 1.0), seed=3))
    for options in ({"classes_as_types": True}, {"agnostic": True}, {"max_det": 3}):
        kept, reference, _ = _both(backend, torch.zeros(1, 3, IMGSZ, IMGSZ), 0.25, **options)
        _assert_same(kept, reference)
        assert len(kept[0]) > 0


def test_level_outputs_read_as_a_mapping_are_what_reconstruct_gives():
    meta = _metadata(1, "type")
    outputs = _outputs(meta, batch=2, objectness=(0.0, 1.0), dtype=np.float16)
    levels = graph_levels(outputs, meta)
    full = reconstruct(outputs, meta)
    assert set(levels) == set(full) == {"detection", "type"} and "image_type" not in levels
    for key in full:
        np.testing.assert_array_equal(levels[key], full[key], err_msg=key)
    rows = np.array([5, 0, 250, 64 * 3 + 7])  # any order, any level
    np.testing.assert_array_equal(levels.type_rows(1, rows), full["type"][1, rows])
    np.testing.assert_array_equal(full["detection"], _torch_decode(outputs, meta).numpy())
    from mhyolo.model.heads import per_anchor
    from mhyolo.model.type_heads import flatten_levels

    logits = flatten_levels([per_anchor(torch.from_numpy(outputs[f"types_{lv}"]).float(), meta.na)
                             for lv in meta.levels])
    np.testing.assert_allclose(full["type"], logits.softmax(-1).numpy(), rtol=0, atol=3e-7)  # NumPy's exp: last bit


def test_a_missing_graph_output_is_named():
    from mhyolo.errors import WeightsError

    meta = _metadata(1, "type")
    outputs = _outputs(meta, batch=1, objectness=(0.0, 1.0))
    del outputs["types_p4"]
    with pytest.raises(WeightsError, match="the runtime returned no types_p4"):
        graph_levels(outputs, meta)


def test_suppress_of_no_candidates_is_empty():
    det = suppress(np.zeros(0, np.int64), np.zeros((0, 6), np.float32))
    assert len(det) == 0 and det.indices.dtype == np.int64 and det.boxes.shape == (0, 4)


def test_readers_are_chosen_by_backend_kind():
    from mhyolo.model.yolo import YoloModel

    meta = _metadata(1, None)
    graph = FixedGraph(meta, _outputs(meta, 1, (0.0, 1.0)))
    assert isinstance(level_reader(graph), GraphLevels)
    model = YoloModel("yolov5n", nc=1).eval()
    assert isinstance(level_reader(model), ModelLevels)
    assert level_reader(object()) is None
    x = torch.zeros(1, 3, IMGSZ, IMGSZ)
    with torch.inference_mode():
        assert set(Inference(graph).call(x)) == set(meta.output_names)  # the graph call alone, nothing decoded
        raw = Inference(model).call(x)  # the forward's logits per level, nothing decoded
    assert set(raw) == {"detection"} and raw["detection"][0].shape == (1, 3, 8, 8, 6)
    half = level_reader(model.half())  # any device and precision: read per level, as float32 arrays
    assert isinstance(half, ModelLevels)
    levels = half(np.zeros((1, 3, IMGSZ, IMGSZ), np.float32))
    assert levels.scores[0].dtype == np.float32 and levels.scores[0].shape == (1, 3, 8, 8, 2)


# ---------------------------------------------------------------- real models
def _three_class_model():
    """yolov5n with COCO's person, bus and sports-ball rows: an nc=3 detector that finds things on the photos."""
    from mhyolo.model.weights import import_official
    from mhyolo.model.yolo import YoloModel

    model = YoloModel("yolov5n", nc=3, names=["person", "bus", "sports ball"])
    state = model.state_dict()
    keep = [0, 1, 2, 3, 4, 5 + 0, 5 + 5, 5 + 32]
    rows = torch.tensor([a * 85 + j for a in range(model.detect.na) for j in keep])
    for key, value in import_official(WEIGHTS).state_dict.items():
        if key.startswith("model.24.m.") and value.shape[0] == model.detect.na * 85:
            value = value[rows]
        if key in state and state[key].shape == value.shape:
            state[key] = value
    model.load_state_dict(state)
    return model.eval()


def _image_head_model():
    from mhyolo.model.weights import import_official
    from mhyolo.model.yolo import YoloModel

    torch.manual_seed(0)
    model = YoloModel("yolov5n-imagehead", nc=80)
    state = model.state_dict()
    state.update({k: v for k, v in import_official(WEIGHTS).state_dict.items()
                  if k in state and state[k].shape == v.shape})
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def photos():
    from mhyolo.deploy.check import read_images
    from mhyolo.infer.preprocess import letterbox, to_float_batch

    if not WEIGHTS.is_file() or not all(p.is_file() for p in IMAGES):
        pytest.skip(f"shared folder absent: needs {WEIGHTS} and the sample images")
    return torch.from_numpy(to_float_batch([letterbox(image, 256)[0] for image in read_images(IMAGES)]))


@needs_shared
@pytest.mark.parametrize("kind", ["typehead", "nc3", "imagehead"])
def test_real_models_keep_the_same_boxes_in_onnxruntime_and_pytorch(kind, photos, tmp_path):
    pytest.importorskip("onnxruntime")
    from mhyolo.deploy.onnx_export import export_onnx
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend

    model = {"typehead": typehead_person_model, "nc3": _three_class_model, "imagehead": _image_head_model}[kind]()
    backend = OnnxRuntimeBackend(export_onnx(model, tmp_path / f"{kind}.onnx", imgsz=256).path, threads=1)
    options = {"classes_as_types": True} if kind == "nc3" else {}
    for runtime in (model, backend):
        for conf in (0.25, 0.001):  # what predict keeps, and validation's many rows
            kept, reference, inference = _both(runtime, photos, conf, **options)
            _assert_same(kept, reference)
            assert len(kept[0]) > 0 and len(kept[1]) > 0, (kind, conf)
            assert (inference.source is None) == (kind == "nc3" and not options)
    with torch.inference_mode():  # validation's threshold really leaves many candidates on real photos
        ids, _ = graph_levels(backend.run(photos[:1]), backend.metadata).candidates(0, 0.001)
    assert len(ids) > 300
