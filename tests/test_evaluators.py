"""The scorers' protocol: every validation loop feeds the registered evaluators the same images, each
reports its own part, `reset` forgets, and a new evaluator joins every validation by registering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.models import sports_ball_model
from helpers.tiny_data import tiny_ball_dataset
from mhyolo.errors import DataError
from mhyolo.eval.evaluators import (DetectionScores, Evaluation, NegativeScores, ScoredImage, register_evaluator,
                                    unregister_evaluator)
from mhyolo.eval.metrics import ImageResult

BOX = np.array([[10.0, 10.0, 30.0, 30.0]], np.float32)
NONE = np.zeros((0, 4), np.float32)


def _image(name: str, gt: np.ndarray, boxes: np.ndarray, scores: list[float]) -> ScoredImage:
    return ScoredImage(name=name, width=64, height=64, gt_boxes=gt, gt_classes=np.zeros(len(gt), np.int64),
                       boxes=boxes, scores=np.array(scores, np.float32), classes=np.zeros(len(boxes), np.int64))


class BoxCount:
    """A stand-in for a new kind of scorer: counts images and boxes scoring at least 0.25."""

    part = "count"

    def __init__(self) -> None:
        self.names: list[str] = []
        self.shown = 0

    def reset(self) -> None:
        self.names, self.shown = [], 0

    def process(self, image: ScoredImage, result: ImageResult) -> None:
        self.names.append(image.name)
        self.shown += int((result.pred_scores >= 0.25).sum())

    def evaluate(self) -> dict[str, int]:
        return {"counted_images": len(self.names), "shown_boxes": self.shown}


def test_reset_forgets_every_image_seen_before():
    evaluation = Evaluation([DetectionScores(["ball"], class_agnostic=True), NegativeScores(), BoxCount()])
    evaluation.process(_image("a", BOX, BOX, [0.9]))
    evaluation.process(_image("b", NONE, BOX, [0.8]))
    first = evaluation.evaluate()
    assert first["count"] == {"counted_images": 2, "shown_boxes": 2}
    assert first["negatives"]["negative_false_positives"] == 1

    evaluation.reset()
    evaluation.process(_image("c", BOX, NONE, []))
    again = evaluation.evaluate()
    fresh = Evaluation([DetectionScores(["ball"], class_agnostic=True), NegativeScores(), BoxCount()])
    fresh.process(_image("c", BOX, NONE, []))
    assert again == fresh.evaluate()
    assert again["detection"]["images"] == 1 and again["detection"]["map50"] == 0.0
    assert again["negatives"]["negative_images"] == 0 and again["count"]["shown_boxes"] == 0


def test_two_evaluators_of_one_part_are_refused():
    with pytest.raises(ValueError, match="'count'"):
        Evaluation([BoxCount(), BoxCount()])
    with pytest.raises(ValueError, match="registered already"):
        register_evaluator("detection", lambda context, built: BoxCount())


def test_a_bad_box_is_refused_naming_the_image_before_any_scorer_sees_it():
    counter = BoxCount()
    evaluation = Evaluation([counter])
    with pytest.raises(DataError, match="frame_7.jpg"):
        evaluation.process(_image("frame_7.jpg", BOX, np.array([[30.0, 10.0, 10.0, 30.0]], np.float32), [0.9]))
    assert counter.names == []


@pytest.fixture
def registered_counter():
    counters: list[BoxCount] = []

    def build(context, built):
        counters.append(BoxCount())
        return counters[-1]

    register_evaluator("count", build)
    yield counters
    unregister_evaluator("count")


@pytest.mark.parametrize("native", [False, True], ids=["batched", "one-image-at-a-time"])
def test_a_registered_evaluator_scores_every_image_of_both_validation_loops(
        tmp_path: Path, shared: Path, official_weights: Path, registered_counter, native: bool):
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import score_split
    from mhyolo.infer.input_size import NativeSize

    spec = load_data_spec(tiny_ball_dataset(shared, tmp_path / "data", per_type_train=1, per_type_val=2))
    model = sports_ball_model(official_weights)
    result = score_split(model, spec, 128, progress=False, native=NativeSize(128, 128) if native else None)
    summary = result.summary()
    (counter,) = registered_counter
    assert sorted(counter.names) == sorted(str(p) for p in result.paths) and len(counter.names) == 6
    shown = sum(int((r.pred_scores >= 0.25).sum()) for r in result.results)
    assert summary["counted_images"] == 6 and summary["shown_boxes"] == shown
    assert list(summary)[-2:] == ["counted_images", "shown_boxes"]  # after the parts registered before it
    assert summary["images"] == 6 and "size_bins" in summary
