"""The two-stage model: a one-class detector whose kept boxes a crop classifier types, through the
type seam, in val, predict and benchmark; scores worked out by hand on made-up detections."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mhyolo.infer.inference as inference_module
from mhyolo.classify.checkpoint import save_classifier
from mhyolo.classify.model import ClassifierSpec, build_classifier
from mhyolo.cli import main
from mhyolo.data.spec import load_data_spec
from mhyolo.errors import ConfigError
from mhyolo.eval.validate import score_split

TYPE_NAMES = ["basketball", "football", "tennis-ball"]
SIDE = 320
# Two images, two balls each: (x1, y1, x2, y2, true type, BGR colour the ball is painted in).
BALLS = {
    "a.png": [(40, 40, 100, 100, 0, (0, 0, 255)), (200, 60, 260, 120, 1, (255, 0, 0))],
    "b.png": [(60, 180, 120, 240, 2, (0, 255, 0)), (180, 200, 240, 260, 1, (255, 255, 0))],
}
BACKGROUND = {"a.png": 60, "b.png": 90}  # grey levels: how the detector stub tells the images apart
# What the classifier stub says for a crop, by the colour at its centre (RGB): (type, probability).
# The blue ball (truly type 1) is called type 2: one of four wrong.
CLASSIFIED = {(255, 0, 0): (0, 0.9), (0, 0, 255): (2, 0.6), (0, 255, 0): (2, 0.8), (0, 255, 255): (1, 0.7)}
DETECTION_SCORE = 0.9


def _write_dataset(folder: Path) -> Path:
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for name, balls in BALLS.items():
            image = np.full((SIDE, SIDE, 3), BACKGROUND[name], np.uint8)
            lines = []
            for x1, y1, x2, y2, kind, colour in balls:
                image[y1:y2, x1:x2] = colour
                cx, cy, w, h = (x1 + x2) / 2 / SIDE, (y1 + y2) / 2 / SIDE, (x2 - x1) / SIDE, (y2 - y1) / SIDE
                lines.append(f"{kind} {cx} {cy} {w} {h}")
            cv2.imwrite(str(folder / "images" / split / name), image)
            (folder / "labels" / split / name.replace(".png", ".txt")).write_text("\n".join(lines) + "\n")
    data = folder / "data.yaml"
    data.write_text(f"path: {folder}\ntrain: images/train\nval: images/val\nnc: 3\nnames: {TYPE_NAMES}\n")
    return data


class DetectorStub:
    """A one-class detector that finds exactly the painted balls (score 0.9), plus a far weaker
    duplicate of each that NMS removes."""

    names = ["ball"]
    stride = torch.tensor([8.0, 16.0, 32.0])

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        rows = []
        for image in x:
            grey = round(float(image[:, 0, 0].mean()) * 255)
            name = min(BACKGROUND, key=lambda n: abs(BACKGROUND[n] - grey))
            found = []
            for x1, y1, x2, y2, *_ in BALLS[name]:
                cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
                found += [[cx, cy, w, h, DETECTION_SCORE, 1.0], [cx + 1, cy, w, h, 0.3, 1.0]]
            rows.append(found)
        return {"detection": torch.tensor(rows, dtype=torch.float32)}


class ClassifierStub:
    """Known outputs: the type and probability of `CLASSIFIED` for the colour at the crop's centre."""

    names = TYPE_NAMES
    imgsz = 64
    margin = 0.2
    path = Path("stub-classifier")

    def __init__(self) -> None:
        self.calls: list[int] = []

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(x)  # crops come as a NumPy batch
        self.calls.append(int(x.shape[0]))
        centre = (x[:, :, self.imgsz // 2, self.imgsz // 2] * 255).round().int().tolist()
        probs = np.zeros((len(centre), len(self.names)), np.float32)
        for i, colour in enumerate(centre):
            kind, p = CLASSIFIED[tuple(colour)]
            probs[i] = (1 - p) / 2
            probs[i, kind] = p
        return probs


@pytest.fixture
def painted(tmp_path: Path) -> Path:
    return _write_dataset(tmp_path / "data")


def test_two_stage_val_gives_the_hand_computed_type_accuracy_and_typed_map(painted: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    nms_images = []
    original = inference_module.non_max_suppression
    monkeypatch.setattr(inference_module, "non_max_suppression",
                        lambda pred, *a, **k: nms_images.append(int(pred.shape[0])) or original(pred, *a, **k))
    classifier = ClassifierStub()
    result = score_split(DetectorStub(), load_data_spec(painted), SIDE, progress=False, batch_size=2,
                         classifier=classifier)
    types = result.types
    # detection is perfect: four balls, four boxes on them (the weak duplicates suppressed)
    assert result.metrics.map50 == pytest.approx(1.0)
    # the blue ball, truly type 1 (football), is called type 2: 3 of 4 right
    assert types.cls_accuracy == pytest.approx(0.75)
    # typed AP50, 101-point COCO interpolation:
    #   type 0: its one ball found and typed right -> 1.0
    #   type 1: two balls, only the yellow one typed 1 -> precision 1 up to recall 0.5, then nothing:
    #           51 of the 101 recall points -> 51 / 101
    #   type 2: the green ball (score 0.9 x 0.8 = 0.72) ranks above the blue one wrongly typed 2
    #           (0.9 x 0.6 = 0.54): precision 1 at recall 1 -> 1.0
    assert types.typed_map50 == pytest.approx((1.0 + 51 / 101 + 1.0) / 3, abs=1e-6)
    assert nms_images == [2]  # one batch of two images, NMS once for each
    assert classifier.calls == [2, 2]  # each image's kept boxes in one classifier call


def test_predict_gives_the_multi_head_json_keys_with_the_classifier_types(painted: Path) -> None:
    from mhyolo.infer.predictor import Predictor

    classifier = ClassifierStub()
    image = cv2.imread(str(painted.parent / "images" / "val" / "a.png"))
    prediction = Predictor(DetectorStub(), imgsz=SIDE, classifier=classifier).predict([image])[0]
    record = prediction.to_json("a.png")
    assert [d["type_name"] for d in record["detections"]] == ["basketball", "tennis-ball"]
    assert [d["type"] for d in record["detections"]] == [0, 2]
    assert [d["type_score"] for d in record["detections"]] == [pytest.approx(0.9), pytest.approx(0.6)]
    assert set(record["detections"][0]) == {"box", "score", "class", "name", "type", "type_name", "type_score"}


def _classifier_file(folder: Path, names: list[str]) -> Path:
    torch.manual_seed(0)
    spec = ClassifierSpec(arch="yolov5n-backbone", names=names, imgsz=64)
    return save_classifier(folder / "classifier.safetensors", build_classifier(spec).eval(), spec)


def test_a_classifier_of_other_types_and_a_multi_class_detector_are_refused(painted: Path, tmp_path: Path,
                                                                            capsys) -> None:
    from mhyolo.model.weights import save_checkpoint
    from mhyolo.model.yolo import YoloModel

    one_class = save_checkpoint(tmp_path / "det1.safetensors", YoloModel("yolov5n", nc=1, names=["ball"]))
    three = save_checkpoint(tmp_path / "det3.safetensors", YoloModel("yolov5n", nc=3, names=TYPE_NAMES))
    other = _classifier_file(tmp_path / "other", ["red", "green", "blue"])
    good = _classifier_file(tmp_path / "good", TYPE_NAMES)

    assert main(["val", "--data", str(painted), "--weights", str(one_class), "--classifier", str(other),
                 "--imgsz", "320"]) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1 and "type ids would not line up" in err and str(other) in err

    assert main(["val", "--data", str(painted), "--weights", str(three), "--classifier", str(good),
                 "--imgsz", "320"]) == 2
    err = capsys.readouterr().err
    assert "detects 3 classes" in err and "one-class detector" in err

    assert main(["val", "--data", str(painted), "--weights", str(one_class), "--classifier", str(good),
                 "--imgsz", "320", "--type-min-score", "0.5"]) == 2
    assert "--type-min-score must be in [0, 0.25]" in capsys.readouterr().err

    with pytest.raises(ConfigError, match="detects 3 classes"):
        score_split(YoloModel("yolov5n", nc=3, names=TYPE_NAMES).eval(), load_data_spec(painted), SIDE,
                    progress=False, classifier=ClassifierStub())


def test_cli_predict_and_val_with_a_classifier_file_and_its_onnx_agree(painted: Path, tmp_path: Path,
                                                                        official_weights: Path, capsys) -> None:
    from helpers.models import sports_ball_model

    from mhyolo.model.weights import save_checkpoint

    pytest.importorskip("onnxruntime")
    detector = save_checkpoint(tmp_path / "ball.safetensors", sports_ball_model(official_weights))
    classifier = _classifier_file(tmp_path, TYPE_NAMES)
    assert main(["classify", "export", "--weights", str(classifier), "--out", str(tmp_path / "c.onnx")]) == 0
    assert "max abs diff" in capsys.readouterr().out
    _check_a_fixed_batch_graph(tmp_path / "c.onnx")
    lines = {}
    for name, path in (("torch", classifier), ("onnx", tmp_path / "c.onnx")):
        assert main(["predict", str(painted.parent / "images" / "val"), "--weights", str(detector), "--classifier",
                     str(path), "--json", "--conf", "0.01", "--imgsz", "320", "--out", str(tmp_path / name)]) == 0
        lines[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines["torch"] and all("type_name" in d for r in lines["torch"] for d in r["detections"])
    assert [[d["type"] for d in r["detections"]] for r in lines["torch"]] == \
        [[d["type"] for d in r["detections"]] for r in lines["onnx"]]
    assert main(["val", "--data", str(painted), "--weights", str(detector), "--classifier", str(classifier),
                 "--json", "--imgsz", "320"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"cls_accuracy", "typed_map50"} <= set(summary)

    import mhyolo

    model = mhyolo.load(detector, classifier=classifier)
    assert model.type_names == TYPE_NAMES
    results = model.predict(painted.parent / "images" / "val", conf=0.01, imgsz=320)
    assert [r.to_json() for r in results] == lines["torch"]
    assert model.val(painted, imgsz=320) == summary


def _check_a_fixed_batch_graph(dynamic_path: Path) -> None:
    """The exported graph with its batch fixed at 4 is fed four crops a call (the last call padded) and
    gives the dynamic graph's probabilities."""
    import onnx

    from mhyolo.classify.backend import load_classifier
    from mhyolo.infer.crop_types import classify_crops

    graph = onnx.load(str(dynamic_path))
    for value in (*graph.graph.input, *graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    fixed_path = dynamic_path.with_name("c4.onnx")
    onnx.save(graph, str(fixed_path))
    dynamic, fixed = load_classifier(dynamic_path), SpyClassifier(load_classifier(fixed_path))
    assert dynamic.fixed_batch is None and fixed.inner.fixed_batch == 4
    fixed.fixed_batch = fixed.inner.fixed_batch
    crops = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(classify_crops(fixed, crops, batch=None), classify_crops(dynamic, crops, batch=None),
                               atol=1e-5)
    assert fixed.calls == [4, 4, 4]


def test_benchmark_times_the_two_stage_model_in_the_detectors_runtimes(shared: Path, official_weights: Path,
                                                                        tmp_path: Path) -> None:
    from helpers.models import sports_ball_model
    from helpers.tiny_data import tiny_ball_dataset

    from mhyolo.model.weights import save_checkpoint

    pytest.importorskip("onnxruntime")
    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=2, per_type_val=2)
    detector = save_checkpoint(tmp_path / "ball.safetensors", sports_ball_model(official_weights))
    classifier = _classifier_file(tmp_path, TYPE_NAMES)
    out = tmp_path / "bench"
    assert main(["benchmark", "--weights", str(detector), "--classifier", str(classifier), "--data", str(data),
                 "--imgsz", "160", "--out", str(out), "--formats", "torch", "onnx", "onnx-int8", "openvino",
                 "--runs", "1", "--warmup", "0", "--threads", "1", "--calib-images", "4", "--balls", "1", "4",
                 "--quiet"]) == 0
    report = json.loads((out / "benchmark.json").read_text())
    rows = {row["id"]: row for row in report["rows"]}
    assert rows["openvino"]["status"] == "skipped" and rows["openvino"]["reason"].startswith("classifier:")
    files = {"torch": classifier, "onnx": out / "classifier" / "classifier.onnx",
             "onnx-int8": out / "classifier" / "classifier_int8.onnx"}
    for fmt, path in files.items():
        row = rows[fmt]
        assert row["status"] == "ok", row["reason"]
        assert row["classifier_file"] == str(path) and path.is_file()
        detector_mb = Path(row["file"]).stat().st_size / 1e6
        assert row["size_mb"] == pytest.approx(detector_mb + path.stat().st_size / 1e6)
        assert set(row["ball_ms"]) == {"1", "4"} and all(v > 0 for v in row["ball_ms"].values())
        assert row["cls_accuracy"] is not None and row["typed_map50"] is not None
    assert report["settings"]["balls"] == [1, 4] and report["settings"]["classifier"] == str(classifier)
    text = (out / "benchmark.md").read_text()
    assert "Two-stage rows" in text and "| PyTorch FP32 |" in text and "ms per kept box (1 → 4 balls)" in text


class SpyClassifier:
    """A real classifier backend behind a counter of its calls (and, if asked, a fixed batch)."""

    def __init__(self, inner, fixed_batch: int | None = None) -> None:
        self.inner = inner
        self.fixed_batch = fixed_batch
        self.names, self.imgsz, self.margin, self.path = inner.names, inner.imgsz, inner.margin, inner.path
        self.calls: list[int] = []

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(x)  # crops come as a NumPy batch
        self.calls.append(int(x.shape[0]))
        assert self.fixed_batch is None or x.shape[0] == self.fixed_batch
        return self.inner.probabilities(x)


class ScatterDetectorStub(DetectorStub):
    """`DetectorStub`'s balls, plus weak boxes: one on each ball of image b (the only box there on
    the yellow one, at 0.004), and false alarms over the background at scores from 0.002 to 0.2."""

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # the predictor hands backends a NumPy batch
        base = super().predict(x)["detection"].tolist()
        rows = []
        for image, found in zip(x, base):
            grey = round(float(image[:, 0, 0].mean()) * 255)
            name = min(BACKGROUND, key=lambda n: abs(BACKGROUND[n] - grey))
            if name == "b.png":
                found = found[:2]  # the green ball found, the yellow one only weakly (below)
                found.append([210.0, 230.0, 60.0, 60.0, 0.004, 1.0])
                found.append([91.0, 210.0, 56.0, 64.0, 0.003, 1.0])  # a weak second box on the green ball
            rng = np.random.default_rng(len(name) + grey)
            for score in np.geomspace(0.002, 0.2, 12):
                cx, cy = rng.uniform(20, SIDE - 20, 2)
                found.append([cx, cy, 14.0, 14.0, float(score), 1.0])
            rows.append(found)
        width = max(len(r) for r in rows)
        rows = [r + [[0.0] * 6] * (width - len(r)) for r in rows]
        return {"detection": torch.tensor(rows, dtype=torch.float32)}


class MeanColourClassifier:
    """A deterministic classifier for any crop: a fixed linear map of its mean colour, softmaxed."""

    names = TYPE_NAMES
    imgsz = 64
    margin = 0.2
    path = Path("mean-colour-classifier")
    weights = torch.tensor([[4.0, -2.0, 1.0], [-1.0, 3.0, -2.0], [0.5, 0.5, 3.0]])

    def __init__(self) -> None:
        self.crops = 0

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(x)  # crops come as a NumPy batch
        self.crops += int(x.shape[0])
        return (x.mean(dim=(2, 3)) @ self.weights).softmax(-1).numpy()


def test_type_min_score_leaves_only_the_typed_map_to_change_and_gives_that_of_a_run_at_its_conf(
        painted: Path) -> None:
    spec = load_data_spec(painted)

    def run(**options):
        classifier = MeanColourClassifier()
        result = score_split(ScatterDetectorStub(), spec, SIDE, progress=False, batch_size=2,
                             classifier=classifier, **options)
        return result, classifier.crops

    exact, all_crops = run()
    floor, floor_crops = run(type_min_score=0.05)
    at_conf, _ = run(conf=0.05)
    full, cut = exact.summary(), floor.summary()
    assert full["untyped_boxes"] == 0 and cut["untyped_boxes"] == all_crops - floor_crops > 10
    typed_keys = {"typed_map50", "typed_map50_95", "typed_per_type", "untyped_boxes"}
    assert {k: v for k, v in cut.items() if k not in typed_keys} == \
        {k: v for k, v in full.items() if k not in typed_keys}  # detection, type accuracy, image type, matrices
    assert cut["typed_map50"] == pytest.approx(at_conf.types.typed_map50, abs=1e-12)
    assert cut["typed_map50_95"] == pytest.approx(at_conf.types.typed_map50_95, abs=1e-12)
    # not exact: the yellow ball's only box (0.004) adds its type's recall in the full ranking
    assert full["typed_map50"] != pytest.approx(cut["typed_map50"])


def test_type_min_score_is_refused_where_it_would_change_more_than_the_typed_map(painted: Path) -> None:
    spec = load_data_spec(painted)
    with pytest.raises(ConfigError, match="at most|must be in"):
        score_split(ScatterDetectorStub(), spec, SIDE, progress=False, classifier=MeanColourClassifier(),
                    type_min_score=0.3)
    with pytest.raises(ConfigError, match="--classifier"):
        score_split(ScatterDetectorStub(), spec, SIDE, progress=False, type_min_score=0.01)
    from mhyolo.infer.slicing import SliceSettings

    with pytest.raises(ConfigError, match="whole-image"):
        score_split(ScatterDetectorStub(), spec, SIDE, progress=False, classifier=MeanColourClassifier(),
                    type_min_score=0.01, slicing=SliceSettings(size=160))


@pytest.mark.parametrize("vnni", [True, False])
def test_the_int8_classifier_takes_the_detector_s_weight_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               vnni: bool) -> None:
    """7-bit weights only where the CPU lacks VNNI (`machine.ort_weight_range`, the detector's rule)."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    import mhyolo.machine as machine
    from mhyolo.classify.checkpoint import read_classifier_onnx_metadata
    from mhyolo.classify.export import export_classifier_onnx, quantize_classifier

    reduce_range = not vnni
    monkeypatch.setattr(machine, "ort_weight_range", lambda cpu: machine.WeightRange(reduce_range, "the rule"))
    classifier = _classifier_file(tmp_path, TYPE_NAMES)
    crops = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    export_classifier_onnx(classifier, tmp_path / "c.onnx", crops)
    done = quantize_classifier(tmp_path / "c.onnx", tmp_path / "c_int8.onnx", [crops[i:i + 1] for i in range(8)],
                               classifier, crops)
    quantization = read_classifier_onnx_metadata(done.path)["quantization"]
    assert quantization["reduce_range"] is reduce_range
    assert quantization["weight_range"] == "chosen for this CPU: the rule"
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(done.path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == (64 if reduce_range else 127)
