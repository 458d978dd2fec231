"""ONNX export: the graph's layout, its metadata, and the check that proves it matches PyTorch.

The type-head model gets the official YOLOv5n weights where they fit and, for its
one-class detector, the official "person" rows of each Detect conv, so it finds real
people on the sample images and the detection comparison has something to compare.
Tolerance: every output (probabilities) within 1e-4 of PyTorch in ONNX Runtime FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mhyolo.deploy.check import OUTPUT_ATOL, check_backend, read_images, validate_export
from mhyolo.deploy.graph import ExportGraph
from mhyolo.infer.layout import LAYOUT_VERSION, METADATA_KEY, ExportMetadata, reconstruct
from mhyolo.errors import ConfigError, MhyoloError
from mhyolo.paths import shared_dir

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'mhyolo[deploy]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")

from mhyolo.deploy.onnx_export import export_onnx  # noqa: E402
from mhyolo.infer.onnx_metadata import read_onnx_metadata  # noqa: E402
from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402

TYPEHEAD_CFG = "yolov5n-typehead"
IMAGEHEAD_CFG = "yolov5n-imagehead"
WEIGHTS = shared_dir() / "weights" / "yolov5n.pt"
IMAGES = [shared_dir() / "images" / "bus.jpg", shared_dir() / "images" / "zidane.jpg"]
IMGSZ = 320
ORT_ATOL = 1e-4
PERSON = 0

needs_shared = pytest.mark.skipif(not WEIGHTS.is_file() or not all(p.is_file() for p in IMAGES),
                                  reason=f"shared folder absent: needs {WEIGHTS} and the sample images")


def typehead_person_model():
    """yolov5n-typehead with the official weights: backbone/neck as they are, the
    Detect convs cut down to box, objectness and the person class (random type head)."""
    from mhyolo.model.weights import import_official
    from mhyolo.model.yolo import YoloModel

    torch.manual_seed(0)
    model = YoloModel(TYPEHEAD_CFG, names=["person"])
    official = import_official(WEIGHTS).state_dict
    state = model.state_dict()
    na, no_official = model.detect.na, 85
    rows = torch.tensor([a * no_official + j for a in range(na) for j in range(5 + 1)])
    for key, value in official.items():
        if key not in state:
            continue
        if key.startswith("model.24.m.") and value.shape[0] == na * no_official:
            value = value[rows]
        if state[key].shape == value.shape:
            state[key] = value
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    if not all(p.is_file() for p in IMAGES):
        pytest.skip(f"sample images absent: {IMAGES}")
    return read_images(IMAGES)


@pytest.fixture(scope="module")
def typehead(tmp_path_factory):
    if not WEIGHTS.is_file():
        pytest.skip(f"official weights absent: {WEIGHTS}")
    model = typehead_person_model()
    path = tmp_path_factory.mktemp("onnx") / "typehead.onnx"
    result = export_onnx(model, path, imgsz=IMGSZ)
    return model, result


# ----------------------------------------------------------------- layout (no runtime)
@pytest.mark.parametrize("cfg", [TYPEHEAD_CFG, IMAGEHEAD_CFG, "yolov5n"], ids=["object-type", "image-type", "coco"])
def test_graph_outputs_read_back_to_exactly_what_the_model_predicts(cfg):
    from mhyolo.model.yolo import YoloModel

    torch.manual_seed(0)
    model = YoloModel(cfg).eval()
    graph = ExportGraph(model, 160)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        expected = model.predict(x)
        outputs = graph.named_outputs(x)
    got = reconstruct({k: v.numpy() for k, v in outputs.items()}, graph.metadata)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(torch.from_numpy(got[key]), expected[key], atol=1e-5, rtol=1e-5)
    # the documented layout: separate 4-D box and score tensors, sigmoid already applied
    na, nc = model.detect.na, model.detect.nc
    assert outputs["boxes_p3"].shape == (2, na * 4, 20, 20)
    assert outputs["scores_p5"].shape == (2, na * (1 + nc), 5, 5)
    probabilities = {k: v for k, v in outputs.items() if not k.startswith("types_")}
    assert all(0 <= float(v.min()) and float(v.max()) <= 1 for v in probabilities.values())
    if "types_p4" in outputs:  # logits; the softmax per anchor happens in reconstruct
        logits = outputs["types_p4"].view(2, na, -1, 10, 10)
        sums = logits.softmax(2).sum(2)
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert float(logits.min()) < 0 or float(logits.max()) > 1  # not probabilities


def test_export_size_must_be_a_multiple_of_the_stride():
    from mhyolo.model.yolo import YoloModel

    with pytest.raises(ConfigError, match="multiple of the model stride 32"):
        ExportGraph(YoloModel("yolov5n"), 100)


def test_metadata_round_trip_and_refuses_other_layouts():
    meta = ExportMetadata(names=["ball"], strides=[8.0, 16.0, 32.0], anchors_px=[[[1.0, 2.0]]] * 3, imgsz=320,
                          type_names=["a", "b"], type_output="type")
    assert ExportMetadata.from_json(meta.to_json()) == meta
    assert meta.output_names == ["boxes_p3", "scores_p3", "boxes_p4", "scores_p4", "boxes_p5", "scores_p5",
                                 "types_p3", "types_p4", "types_p5"]
    with pytest.raises(MhyoloError, match="x.onnx: output layout version 99"):
        ExportMetadata.from_json(meta.to_json().replace(f'"layout_version": {LAYOUT_VERSION}', '"layout_version": 99'),
                                 "x.onnx")


# --------------------------------------------------------------------- ONNX Runtime
@needs_shared
def test_export_is_one_file_with_documented_outputs_and_metadata(typehead):
    model, result = typehead
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["typehead.onnx"]  # no .onnx.data
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == [
        "boxes_p3", "scores_p3", "boxes_p4", "scores_p4", "boxes_p5", "scores_p5", "types_p3", "types_p4", "types_p5"]
    assert METADATA_KEY in {p.key for p in proto.metadata_props}
    meta = read_onnx_metadata(result.path)
    assert meta.names == ["person"] and meta.type_names == ["basketball", "football", "tennis-ball"]
    assert meta.strides == [8.0, 16.0, 32.0] and meta.imgsz == IMGSZ and meta.type_output == "type"
    torch.testing.assert_close(torch.tensor(meta.anchors_px), model.detect.anchors_px)
    ops = {node.op_type for node in proto.graph.node}
    assert "Sigmoid" in ops and "Softmax" not in ops  # type logits leave the graph from their conv
    producer = {out: node.op_type for node in proto.graph.node for out in node.output}
    assert all(producer[f"types_{level}"] == "Conv" for level in ("p3", "p4", "p5"))


@needs_shared
def test_onnx_runtime_matches_pytorch_on_real_images(typehead, images):
    model, result = typehead
    backend = OnnxRuntimeBackend(result.path, threads=1)
    check = check_backend(model, backend, images, atol=ORT_ATOL)
    assert check.ok, check.problems
    assert len(check.diffs) == 9 and max(d.max_abs_diff for d in check.diffs) <= ORT_ATOL
    assert sum(check.detections) >= 3  # real people found, so the detection comparison means something
    assert "boxes_p3" in check.table()


@needs_shared
def test_check_fails_when_the_runtime_output_is_perturbed(typehead, images, monkeypatch):
    model, result = typehead
    backend = OnnxRuntimeBackend(result.path, threads=1)
    original = backend._infer

    def shifted(batch: np.ndarray) -> dict[str, np.ndarray]:
        out = original(batch)
        out["scores_p4"] = out["scores_p4"] + 0.01
        return out

    monkeypatch.setattr(backend, "_infer", shifted)
    with pytest.raises(MhyoloError, match="scores_p4: max abs diff 0.01"):
        validate_export(model, backend, images, atol=OUTPUT_ATOL)


@needs_shared
def test_check_fails_when_the_graph_is_edited(typehead, images, tmp_path):
    """A constant added to one output inside the graph (a broken export) is caught."""
    from onnx import helper, numpy_helper

    model, result = typehead
    proto = onnx.load(str(result.path))
    target = "boxes_p3"
    for node in proto.graph.node:
        node.output[:] = [f"{target}_orig" if name == target else name for name in node.output]
    proto.graph.initializer.append(numpy_helper.from_array(np.array(0.02, dtype=np.float32), "shift"))
    proto.graph.node.append(helper.make_node("Add", [f"{target}_orig", "shift"], [target]))
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, str(edited))
    with pytest.raises(MhyoloError, match="boxes_p3: max abs diff 0.02"):
        validate_export(model, OnnxRuntimeBackend(edited, threads=1), images)


@needs_shared
def test_fixed_size_and_batch(typehead):
    _, result = typehead
    backend = OnnxRuntimeBackend(result.path, threads=1)
    x = torch.rand(3, 3, IMGSZ, IMGSZ)
    batched = backend.run(x)  # fixed batch 1: fed one image at a time
    single = backend.run(x[1:2])
    np.testing.assert_allclose(batched["types_p5"][1:2], single["types_p5"], atol=1e-6)
    assert backend.predict(x)["detection"].shape == (3, 3 * (40 * 40 + 20 * 20 + 10 * 10), 6)
    with pytest.raises(ConfigError, match=f"expects input \\(B, 3, {IMGSZ}, {IMGSZ}\\)"):
        backend.run(torch.rand(1, 3, 640, 640))


@needs_shared
def test_dynamic_batch_export_runs_a_batch_at_once(tmp_path):
    from mhyolo.model.yolo import YoloModel

    torch.manual_seed(0)
    model = YoloModel(IMAGEHEAD_CFG).eval()
    result = export_onnx(model, tmp_path / "dyn.onnx", imgsz=160, dynamic_batch=True, simplify=False)
    backend = OnnxRuntimeBackend(result.path, threads=1)
    assert backend.session.get_inputs()[0].shape[0] == "batch"
    x = torch.rand(2, 3, 160, 160)
    out = backend.predict(x)
    with torch.no_grad():
        expected = model.predict(x)
    torch.testing.assert_close(torch.from_numpy(out["image_type"]), expected["image_type"], atol=ORT_ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(out["detection"][..., 4:]), expected["detection"][..., 4:],
                               atol=ORT_ATOL, rtol=0)


@needs_shared
def test_cli_exports_official_yolov5n_and_reports_the_diffs(tmp_path, capsys):
    from mhyolo.cli import main

    out = tmp_path / "yolov5n.onnx"
    code = main(["export", "--weights", str(WEIGHTS), "--format", "onnx", "--out", str(out), "--imgsz", "160"])
    printed = capsys.readouterr().out
    assert code == 0
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["yolov5n.onnx"]
    for name in ("boxes_p3", "scores_p3", "boxes_p5", "scores_p5"):
        line = next(row for row in printed.splitlines() if row.startswith(name))
        assert float(line.split()[-1]) <= OUTPUT_ATOL
    assert read_onnx_metadata(out).names[:2] == ["person", "bicycle"]


@needs_shared
def test_cli_export_fails_loudly_when_the_runtime_disagrees(tmp_path, monkeypatch, capsys):
    from mhyolo.cli import main

    original = OnnxRuntimeBackend._infer

    def broken(self, batch):
        out = original(self, batch)
        out["boxes_p5"] = out["boxes_p5"] * 0.9
        return out

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", broken)
    code = main(["export", "--weights", str(WEIGHTS), "--out", str(tmp_path / "y.onnx"), "--imgsz", "160",
                 "--no-simplify"])
    captured = capsys.readouterr()
    assert code != 0
    assert "disagrees with PyTorch" in captured.err and "boxes_p5" in captured.err


def test_cli_converts_an_exported_onnx_to_openvino_checked_against_onnx_runtime(tmp_path, capsys):
    """The README's `mhyolo export --weights model.onnx --format openvino`: the ONNX file is the reference."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'mhyolo[deploy]')")
    from mhyolo.cli import main
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    onnx_path = tmp_path / "yolov5n.onnx"
    assert main(["export", "--weights", str(WEIGHTS), "--out", str(onnx_path), "--imgsz", "160"]) == 0
    capsys.readouterr()
    xml = tmp_path / "ir" / "model.xml"
    code = main(["export", "--weights", str(onnx_path), "--format", "openvino", "--out", str(xml)])
    printed = capsys.readouterr()
    assert code == 0 and xml.is_file() and xml.with_suffix(".bin").is_file()
    assert "vs ONNX Runtime" in printed.out and "detections per image (OnnxRuntimeBackend)" in printed.out
    line = next(row for row in printed.out.splitlines() if row.startswith("scores_p3"))
    assert float(line.split()[-1]) <= OUTPUT_ATOL
    backend = OpenVinoBackend(xml, precision="f32")
    assert backend.imgsz == 160 and backend.names[:2] == ["person", "bicycle"]


def test_cli_onnx_conversion_fails_loudly_when_openvino_disagrees(tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'mhyolo[deploy]')")
    from mhyolo.cli import main
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    onnx_path = tmp_path / "yolov5n.onnx"
    assert main(["export", "--weights", str(WEIGHTS), "--out", str(onnx_path), "--imgsz", "160"]) == 0
    original = OpenVinoBackend._infer

    def broken(self, batch):
        out = original(self, batch)
        out["boxes_p4"] = out["boxes_p4"] + 3.0
        return out

    monkeypatch.setattr(OpenVinoBackend, "_infer", broken)
    capsys.readouterr()
    code = main(["export", "--weights", str(onnx_path), "--format", "openvino", "--out", str(tmp_path / "m.xml")])
    err = capsys.readouterr().err
    assert code != 0 and "disagrees with ONNX Runtime" in err and "boxes_p4" in err


@pytest.mark.parametrize("extra, message", [(["--format", "onnx"], "already ONNX"),
                                            (["--format", "openvino", "--imgsz", "320"], "fixed at export")])
def test_cli_onnx_source_refuses_what_it_cannot_do(tmp_path, capsys, extra, message):
    from mhyolo.cli import main

    onnx_path = tmp_path / "yolov5n.onnx"
    assert main(["export", "--weights", str(WEIGHTS), "--out", str(onnx_path), "--imgsz", "160"]) == 0
    capsys.readouterr()
    code = main(["export", "--weights", str(onnx_path), *extra, "--out", str(tmp_path / "x")])
    assert code == 2 and message in capsys.readouterr().err
