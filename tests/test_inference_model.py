"""A model is one object (`infer.model.InferenceModel`): it carries the input-size rule and builds the
predictor, and both front doors (`mhyolo.load(...)` and the `predict` / `val` commands) go through it,
so the same settings give the same predictor and the same detections and figures at either door."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.models import sports_ball_model
from helpers.tiny_data import tiny_ball_dataset

import mhyolo
from mhyolo.cli import main
from mhyolo.errors import ConfigError
from mhyolo.infer.assemble import InferenceSettings, build_predictor
from mhyolo.infer.default_rule import DEFAULT_SCALES
from mhyolo.infer.input_size import NativeSize
from mhyolo.runtime.model import NATIVE_CONFLICT, InferenceModel
from mhyolo.infer.multiscale import MultiScalePredictor, ScaleSettings
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.slicing import SlicedPredictor, SliceSettings
from mhyolo.model.weights import save_checkpoint


@pytest.fixture(scope="module")
def sample_images(typed: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset's val images, each also padded wide and tall (dark borders): rectangular and square
    letterboxes, and the native size, then differ."""
    import cv2

    folder = tmp_path_factory.mktemp("samples")
    for path in sorted((typed[1].parent / "images" / "val").iterdir()):
        image = cv2.imread(str(path))
        height, width = image.shape[:2]
        cv2.imwrite(str(folder / path.name), image)
        for name, (bottom, right) in (("wide", (0, width)), ("tall", (height // 2, 0))):
            padded = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(40, 40, 40))
            cv2.imwrite(str(folder / f"{path.stem}-{name}.png"), padded)
    return folder


@pytest.fixture(scope="module")
def typed(shared: Path, official_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A typed ball model trained (by its metadata) at 320 px, and a small real dataset's data.yaml."""
    folder = tmp_path_factory.mktemp("inference-model")
    data = tiny_ball_dataset(shared, folder / "data", per_type_train=1, per_type_val=2)
    weights = save_checkpoint(folder / "model.safetensors", sports_ball_model(official_weights, "yolov5n-typehead-lite"),
                              {"train_config": {"imgsz": 320}})
    return weights, data


def _base(predictor: object) -> Predictor:
    return predictor if isinstance(predictor, Predictor) else predictor.predictor  # type: ignore[attr-defined]


@pytest.mark.parametrize("imgsz, slicing, scales, kind, native", [
    (None, None, None, MultiScalePredictor, None),  # whole images on a PyTorch model: the default rule
    (320, None, None, Predictor, None),
    ("native", None, None, Predictor, NativeSize(320, 1280)),
    (None, SliceSettings(size=320), None, SlicedPredictor, None),  # tiles and scales: the trained size
    (None, None, ScaleSettings(sizes=(0.5, 1)), MultiScalePredictor, None),
])
def test_the_model_picks_the_predictor_by_its_input_rule(typed: tuple[Path, Path], imgsz, slicing, scales, kind,
                                                         native) -> None:
    model = InferenceModel.load(typed[0])
    predictor = model.predictor(InferenceSettings(slicing=slicing, scales=scales), imgsz)
    assert type(predictor) is kind
    base = _base(predictor)
    assert base.imgsz == 320 and base.native == native and base.model is model.backend
    if kind is MultiScalePredictor:
        assert (predictor.settings is DEFAULT_SCALES) == (scales is None)
        assert predictor.sizes == (160, 320) if scales else (predictor.sizes == (320,) and predictor.native)


def test_native_combines_with_neither_slicing_nor_scales(typed: tuple[Path, Path]) -> None:
    model = InferenceModel.load(typed[0])
    for settings in (InferenceSettings(slicing=SliceSettings(size=320)), InferenceSettings(scales=ScaleSettings((1,)))):
        with pytest.raises(ConfigError, match=NATIVE_CONFLICT):
            model.predictor(settings, "native")
    with pytest.raises(ConfigError, match="do not combine"):
        build_predictor(model.backend, 320, InferenceSettings(slicing=SliceSettings(size=320),
                                                              scales=ScaleSettings((1,))))


def test_scoring_keeps_the_default_rule_off_for_a_type_min_score(typed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    import mhyolo.eval.validate as validate

    seen = []
    monkeypatch.setattr(validate, "score_split", lambda backend, spec, imgsz, split, **kw: seen.append((imgsz, kw)))
    model = InferenceModel.load(typed[0])
    from mhyolo.data.spec import load_data_spec

    spec = load_data_spec(typed[1])
    model.score(spec, "val", InferenceSettings())
    model.score(spec, "val", InferenceSettings(), type_min_score=0.1)
    assert seen[0][0] == 320 and seen[0][1]["scales"] is DEFAULT_SCALES and seen[0][1]["native"] is None
    assert seen[1][1]["scales"] is None and seen[1][1]["native"] is None and seen[1][1]["type_min_score"] == 0.1
    model.score(spec, "val", InferenceSettings(), imgsz="native")
    assert seen[2][1]["scales"] is None and seen[2][1]["native"] == NativeSize(320, 1280)


@pytest.mark.slow
@pytest.mark.parametrize("api, flags", [
    ({}, []),
    ({"imgsz": 320}, ["--imgsz", "320"]),
    ({"slice_size": 160}, ["--slice", "160"]),
    ({"scales": [0.5, 1], "merge": "nms"}, ["--scales", "0.5", "1", "--merge", "nms"]),
    ({"conf": 0.1, "max_det": 3}, ["--conf", "0.1", "--max-det", "3"]),
])
def test_both_front_doors_give_the_same_detections(typed: tuple[Path, Path], sample_images: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], api: dict, flags: list) -> None:
    weights, images = typed[0], sample_images
    results = mhyolo.load(weights).predict(images, **api)
    assert main(["predict", str(images), "--weights", str(weights), "--out", str(tmp_path), "--json", *flags]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(cli) == len(results) > 0
    assert [r.to_json() for r in results] == cli


@pytest.mark.slow
def test_both_front_doors_give_the_same_figures(typed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    weights, data = typed
    figures = mhyolo.load(weights).val(data, split="val")
    assert main(["val", "--weights", str(weights), "--data", str(data), "--split", "val", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(json.dumps(figures)) == cli
