"""`predict --track`: each box carries the id of the track it joined at its frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.video import write_clip
from mhyolo.cli import main
from mhyolo.infer.draw import label_for
from mhyolo.infer.predictor import Prediction
from mhyolo.track.online import NO_TRACK, OnlineTrackIds, TrackedPrediction
from mhyolo.track.run import TrackSettings


def _frame(*balls: tuple[float, float, float]) -> Prediction:
    """A prediction of 12-px balls at (x, y) with the given scores."""
    boxes = np.array([[x - 6, y - 6, x + 6, y + 6] for x, y, _ in balls], np.float32).reshape(-1, 4)
    return Prediction(boxes=boxes, scores=np.array([s for *_, s in balls], np.float32),
                      class_ids=np.zeros(len(balls), np.int64), class_names=["ball"] * len(balls),
                      image_shape=(720, 1280))


def test_one_ball_keeps_its_id_and_a_far_false_alarm_gets_none() -> None:
    tracks = OnlineTrackIds(TrackSettings())
    ids = []
    for step in range(6):
        ball = (100 + 20 * step, 300 + 5 * step, 0.6)
        far = (1100, 100, 0.9 if step == 3 else 0.2)  # a better-scoring box outside the gate on frame 3
        out = tracks(_frame(far, ball))
        assert isinstance(out, TrackedPrediction)
        ids.append(out.track_ids.tolist())
    assert ids[0] == [NO_TRACK, 1] and all(row == [NO_TRACK, 1] for row in ids)
    line = out.to_json("f5.jpg")["detections"]
    assert [d["track"] for d in line] == [None, 1]


def test_an_unread_frame_counts_as_a_miss_and_the_track_ends_after_max_misses() -> None:
    settings = TrackSettings()
    tracks = OnlineTrackIds(settings)
    assert tracks(_frame((100, 100, 0.9))).track_ids.tolist() == [1]
    for _ in range(settings.motion.max_misses + 1):
        assert tracks(None) is None
    assert tracks(_frame((110, 100, 0.9))).track_ids.tolist() == [2]  # a new track: the old one ended


def test_several_balls_keep_distinct_ids_while_they_cross() -> None:
    tracks = OnlineTrackIds(TrackSettings(many=True))
    seen = []
    for step in range(8):
        left = (200 + 30 * step, 400, 0.8)
        right = (620 - 30 * step, 410, 0.7)
        seen.append(tracks(_frame(left, right)).track_ids.tolist())
    assert seen[0] == [1, 2] and all(row == [1, 2] for row in seen)


def test_the_drawn_label_names_the_track() -> None:
    out = OnlineTrackIds()(_frame((100, 100, 0.9)))
    assert label_for(out, 0)[0] == "#1 ball 0.90"
    assert label_for(_frame((100, 100, 0.9)), 0)[0] == "ball 0.90"


def test_cli_track_on_a_clip(shared: Path, official_weights: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    bus = cv2.resize(cv2.imread(str(shared / "images" / "bus.jpg")), (320, 416))
    # the scene pans a little: every object moves
    video = write_clip(tmp_path / "clip.mp4", (np.roll(bus, 4 * shift, axis=1) for shift in range(4)))
    args = ["predict", str(video), "--weights", str(official_weights), "--imgsz", "320", "--json",
            "--no-images"]
    assert main([*args, "--track"]) == 0
    tracked = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(args) == 0
    plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(tracked) == 4
    for with_ids, without in zip(tracked, plain):  # the same boxes, each with a track key
        assert [{k: v for k, v in d.items() if k != "track"} for d in with_ids["detections"]] == without["detections"]
    ids = [[d["track"] for d in line["detections"] if d["track"] is not None] for line in tracked]
    assert all(row == [1] for row in ids)  # one object followed from the first frame to the last
