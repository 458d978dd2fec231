"""Per-box outputs as registered fields (`infer.predictor.BoxField`): selecting, joining and writing a
`Prediction` carry every field, and a new field (here a track id) needs only its attribute and one
registration to travel through tiles, scale merges and `--json`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

import mhyolo.infer.predictor as predictor_module
from mhyolo.infer.predictor import BOX_FIELDS, BoxField, Prediction, register_box_field
from mhyolo.infer.scale_merge import MERGE_RULES, MergeOptions, ScalePass
from mhyolo.infer.slicing import merge_predictions


def _typed(boxes: list[list[float]], scores: list[float], types: list[int]) -> Prediction:
    n = len(boxes)
    return Prediction(boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.array(scores, np.float32),
                      class_ids=np.zeros(n, np.int64), class_names=["ball"] * n, image_shape=(100, 200),
                      type_ids=np.array(types, np.int64), type_names=[["white", "yellow"][t] for t in types],
                      type_scores=np.full(n, 0.8, np.float32))


def test_the_json_line_keeps_its_keys_order_and_rounding() -> None:
    line = _typed([[1.23456, 2, 3, 4]], [0.123456], [1]).to_json("a.jpg")
    assert json.dumps(line) == ('{"image": "a.jpg", "detections": [{"box": [1.23, 2.0, 3.0, 4.0], "score": 0.1235, '
                                '"class": 0, "name": "ball", "type": 1, "type_name": "yellow", "type_score": 0.8}]}')
    untyped = Prediction(boxes=np.zeros((1, 4), np.float32), scores=np.ones(1, np.float32),
                         class_ids=np.zeros(1, np.int64), class_names=["ball"], image_shape=(10, 10))
    assert list(untyped.to_json("b.jpg")["detections"][0]) == ["box", "score", "class", "name"]


def test_subset_and_concatenate_carry_every_field_in_order() -> None:
    a, b = _typed([[0, 0, 10, 10]], [0.9], [0]), _typed([[50, 50, 60, 60], [5, 5, 9, 9]], [0.5, 0.7], [1, 0])
    joined = Prediction.concatenate([a, b])
    assert joined.boxes.dtype == np.float32 and joined.boxes.shape == (3, 4)
    assert joined.type_names == ["white", "yellow", "white"] and joined.scores.tolist() == pytest.approx([0.9, 0.5, 0.7])
    picked = joined.subset(np.array([2, 0]))
    assert picked.type_ids.tolist() == [0, 0] and picked.boxes[0].tolist() == [5, 5, 9, 9]
    assert joined.subset(joined.scores > 0.6).class_names == ["ball", "ball"]
    with pytest.raises(ValueError, match="registered already"):
        register_box_field(BoxField("scores", "score", np.float32))


@dataclass
class Tracked(Prediction):
    track_ids: np.ndarray | None = None


def test_a_new_field_travels_through_tiles_scale_merges_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictor_module, "BOX_FIELDS", [*BOX_FIELDS, BoxField("track_ids", "track", np.int64)])

    def tracked(boxes, scores, tracks) -> Tracked:
        base = _typed(boxes, scores, [0] * len(boxes))
        return Tracked(**{k: getattr(base, k) for k in base.__dataclass_fields__}, track_ids=np.array(tracks))

    near = tracked([[10, 10, 30, 30], [100, 10, 120, 30]], [0.9, 0.6], [7, 8])
    other = tracked([[11, 11, 31, 31]], [0.5], [9])  # the same ball as track 7, weaker
    merged = merge_predictions([near, other], (100, 200), iou=0.5, max_det=10, merge="nms")
    assert isinstance(merged, Tracked) and merged.track_ids.tolist() == [7, 8]
    passes = [ScalePass(near, 320, 1.0), ScalePass(other, 640, 2.0)]
    for rule in ("nms", "wbf"):
        fused = MERGE_RULES[rule].merge(passes, MergeOptions())
        assert sorted(fused.track_ids.tolist()) == [7, 8], rule  # each fused box takes its best member's
    line = merged.to_json("x.jpg")["detections"]
    assert [d["track"] for d in line] == [7, 8] and list(line[0])[-1] == "track"
