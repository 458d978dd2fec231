"""Multi-scale inference frame by frame (`MultiScalePredictor.plans` / `frame_passes` / `combine`), as
throughput mode runs it: the same predictions as `predict`, each pass a call of its own, a native
pass the size of a fixed scale run once.

The backend is `test_multiscale.BandBackend` (finds bright squares of a size band in its input)."""

from __future__ import annotations

import json

import numpy as np
from test_multiscale import LARGE, SMALL, WHITE, YELLOW, BandBackend, _image, _scene

from mhyolo.infer.multiscale import MultiScalePredictor, PassPlan, ScaleSettings
from mhyolo.infer.predictor import Predictor
from mhyolo.infer.stream import StreamPredictor, ThreadedCalls


def _as_json(predictions) -> list[str]:
    return [json.dumps(p.to_json("x.jpg")) for p in predictions]


def test_a_native_pass_the_size_of_a_fixed_scale_is_run_once() -> None:
    backend = BandBackend()
    both = MultiScalePredictor(Predictor(backend, imgsz=320, conf=0.25, rect=True), ScaleSettings(sizes=(320, "native")))
    small = _image(256, 256, [((40, 40, 100, 100), WHITE)])  # its own size rounds up to the floor, 320
    assert both.plans(small) == [PassPlan(0)]
    assert both.plans(_scene()) == [PassPlan(0), PassPlan(1)]  # 640 px: two sizes
    (found,) = both.predict([small])
    assert backend.shapes == [(320, 320)]  # one call
    alone = Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True).predict([small])
    assert _as_json([found]) == _as_json(alone) and len(found) == 1


def test_frames_passes_combined_are_what_predict_gives() -> None:
    images = [_scene(), _image(256, 256, [((40, 40, 100, 100), YELLOW)]),
              _image(720, 1280, [(SMALL, WHITE), (LARGE, YELLOW)])]
    for settings in (ScaleSettings(sizes=(320, "native"), merge="size"),
                     ScaleSettings(sizes=(1, 2), merge="wbf", flip=True, weights=(0.9, 1.0))):
        predictor = MultiScalePredictor(Predictor(BandBackend(), imgsz=320, conf=0.25, rect=True), settings)
        expected = predictor.predict(images)
        by_frame = [predictor.combine(image, [p.predictor.predict([p.image])[0]
                                              for p in predictor.frame_passes(image)]) for image in images]
        assert _as_json(by_frame) == _as_json(expected)
        assert [len(predictor.frame_passes(image)) for image in images] == (
            [2, 1, 2] if not settings.flip else [4, 4, 4])


def test_a_fixed_graph_s_tiled_scale_is_computed_with_the_frame_and_streams_the_same() -> None:
    backend = BandBackend()
    backend.imgsz = 320  # an exported graph: 640 runs as 320-px tiles
    predictor = MultiScalePredictor(Predictor(backend, imgsz=320, conf=0.25), ScaleSettings(sizes=(320, 640)))
    images = [_scene(), _scene()[:, ::-1].copy()]
    passes = predictor.frame_passes(images[0])
    assert passes[0].done is None and passes[0].predictor is predictor.predictor
    assert passes[1].done is not None and passes[1].predictor is None
    expected = predictor.predict(images)
    stream = StreamPredictor(predictor)
    stream.calls.close()
    stream.calls = ThreadedCalls(predictor.inference, streams=2)
    with stream:
        got = [p for _, p in stream.predict(enumerate(images))]
    assert _as_json(got) == _as_json(expected) and all(len(p) for p in got)
