"""Ball tracks: the motion model and its gate, still false alarms, gap filling, track-guided re-detection
(with model calls counted), the distance-tolerance F1, the synthetic clips and bad input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from mhyolo.cli import main
from mhyolo.errors import ConfigError, DataError
from mhyolo.infer.sources import Frame
from mhyolo.track.gaps import fill_gaps, turns
from mhyolo.track.metrics import BallLabel, read_label_csv, score_positions, write_label_csv
from mhyolo.track.motion import Candidate, MotionSettings, SingleBallTracker, predict_centre
from mhyolo.track.points import INTERPOLATED, REDETECTED, TrackPoint
from mhyolo.track.run import Tracker, TrackSettings
from mhyolo.track.synthetic import ClipSettings, make_clip, path_of


def _ball(x: float, y: float, score: float = 0.9, side: float = 10.0) -> Candidate:
    return Candidate((x - side / 2, y - side / 2, x + side / 2, y + side / 2), score)


def _point(frame: int, x: float, y: float) -> TrackPoint:
    return TrackPoint(frame, 1, (x - 5, y - 5, x + 5, y + 5), 0.9)


def test_the_motion_model_follows_a_ballistic_path():
    """Three points of y = 100 + 3t + 0.5 * 0.9 t^2, x = 50 + 12t: the next centre within 0.01 px, and
    ten frames ahead within 0.1 px (constant acceleration is exact on a parabola)."""
    def centre(t: float) -> tuple[float, float]:
        return 50 + 12 * t, 100 + 3 * t + 0.45 * t * t

    points = [_point(t, *centre(t)) for t in (0, 1, 2)]
    assert np.allclose(predict_centre(points, 3), centre(3), atol=0.01)
    assert np.allclose(predict_centre(points, 12), centre(12), atol=0.1)
    assert np.allclose(predict_centre(points[:2], 2), (74, 106.9), atol=0.01)  # two points: constant velocity


def test_the_gate_drops_a_far_false_alarm_and_keeps_the_ball():
    tracker = SingleBallTracker(MotionSettings(max_step=30, start_score=0.5))
    for t in range(3):
        tracker.update(t, [_ball(100 + 20 * t, 200)])
    # the ball goes on (score 0.3); a brighter false alarm 400 px away scores 0.95
    point = tracker.update(3, [_ball(160, 200, 0.3), _ball(560, 200, 0.95)])
    assert point is not None and np.allclose(point.centre, (160, 200))
    # nothing near the ball: a miss, not the false alarm
    assert tracker.update(4, [_ball(560, 200, 0.95)]) is None and tracker.track.misses == 1


def test_a_track_ends_after_max_misses_and_the_next_starts_a_new_one():
    tracker = SingleBallTracker(MotionSettings(max_misses=2, start_score=0.5))
    tracker.update(0, [_ball(100, 100)])
    for t in (1, 2, 3):
        tracker.update(t, [])
    assert tracker.track is None and len(tracker.finished) == 1
    tracker.update(4, [_ball(900, 500)])
    assert [t.id for t in tracker.tracks()] == [1, 2]


def test_a_still_false_alarm_is_dropped_and_never_started_again():
    tracker = SingleBallTracker(MotionSettings(still_frames=5, still_px=2.0, start_score=0.3))
    for t in range(5):  # a bright spot that never moves
        tracker.update(t, [_ball(700, 100, 0.8)])
    assert tracker.track is None and tracker.tracks() == []
    # the moving ball (lower score) is taken, the still spot is not
    for t in range(5, 9):
        point = tracker.update(t, [_ball(700, 100, 0.8), _ball(100 + 15 * t, 300, 0.4)])
        assert point is not None and point.centre[1] == 300


def test_gaps_are_filled_on_the_segment_and_flagged_only_up_to_the_limit():
    points = [_point(0, 0, 0), _point(4, 40, 80), _point(20, 200, 80)]
    filled = fill_gaps(points, max_gap=3)
    added = [p for p in filled if p.source == INTERPOLATED]
    assert [p.frame for p in added] == [1, 2, 3]  # the 15-frame gap stays open
    for p in added:
        w = p.frame / 4
        assert np.allclose(p.centre, (40 * w, 80 * w)) and p.score == 0.0 and p.interpolated


def test_a_bounce_is_a_downward_to_upward_turn():
    centres = path_of(ClipSettings(frames=40, gravity=1.5, speed=10, seed=3))
    points = [_point(i, x, y) for i, (x, y) in enumerate(centres)]
    found = turns(points)
    lowest = [i for i in range(1, 39) if centres[i, 1] >= centres[i - 1, 1] and centres[i, 1] > centres[i + 1, 1]]
    assert found == lowest and len(found) >= 1


def test_positions_are_scored_with_a_distance_tolerance():
    labels = {"a": BallLabel(True, 100, 100), "b": BallLabel(True, 100, 100), "c": BallLabel(True, 100, 100),
              "d": BallLabel(False, 0, 0), "e": BallLabel(False, 0, 0)}
    guesses = {"a": np.array([103.0, 104.0]),  # 5 px: a hit at 5
               "b": np.array([108.0, 100.0]),  # 8 px: a hit at 10, a false positive at 5
               "c": None,                       # missed
               "d": np.array([1.0, 1.0]),       # a ball where none is visible
               "e": None}
    at5, at10 = score_positions(guesses, labels, 5.0), score_positions(guesses, labels, 10.0)
    assert (at5.tp, at5.fp, at5.fn) == (1, 2, 1) and (at10.tp, at10.fp, at10.fn) == (2, 1, 1)
    assert at10.precision == pytest.approx(2 / 3) and at10.recall == pytest.approx(2 / 3)
    assert at10.f1 == pytest.approx(2 / 3)


def test_label_csv_round_trip_and_a_bad_row_named(tmp_path: Path):
    labels = {"f0.png": BallLabel(True, 10.5, 20.0), "f1.png": BallLabel(False, 0.0, 0.0)}
    write_label_csv(tmp_path / "Label.csv", labels)
    assert read_label_csv(tmp_path / "Label.csv") == labels
    (tmp_path / "bad.csv").write_text("file name,visibility,x,y\nf0.png,1,10,20\nf1.png,1,ten,20\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: .*numbers"):
        read_label_csv(tmp_path / "bad.csv")


@dataclass
class Found:
    boxes: np.ndarray
    scores: np.ndarray
    type_names: list[str] | None = None


class WholeFrame:
    """Finds the ball (a white square) only while it is at least `min_side` px: a small ball is lost."""

    def __init__(self, min_side: int) -> None:
        self.min_side, self.calls = min_side, 0

    def predict(self, images):
        self.calls += 1
        return [_white_square(images[0], self.min_side)]


class Window:
    """Finds any white square in a crop (a native-resolution look)."""

    def __init__(self) -> None:
        self.calls, self.shapes = 0, []

    def predict(self, images):
        self.calls += 1
        self.shapes.append(images[0].shape[:2])
        return [_white_square(images[0], 1)]


def _white_square(image: np.ndarray, min_side: int) -> Found:
    ys, xs = np.nonzero(image[:, :, 0] > 200)
    if len(xs) == 0 or xs.max() - xs.min() + 1 < min_side:
        return Found(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    return Found(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32), np.array([0.8], np.float32))


def _frames(sides: list[int]) -> list[Frame]:
    frames = []
    for t, side in enumerate(sides):
        image = np.zeros((480, 640, 3), np.uint8)
        x, y = 100 + 20 * t, 240
        image[y - side // 2:y - side // 2 + side, x - side // 2:x - side // 2 + side] = 255
        frames.append(Frame(name=f"f{t}.png", path=Path(f"f{t}.png"), image=image, index=t))
    return frames


def test_the_ball_lost_by_the_whole_frame_pass_is_found_in_the_window_the_track_points_to():
    frames = _frames([12, 12, 12, 7, 7, 12])  # frames 3-4: too small for the whole-frame pass
    whole, window = WholeFrame(min_side=8), Window()
    tracker = Tracker(whole, TrackSettings(motion=MotionSettings(max_step=40, still_frames=0)), window=window,
                      window_side=128)
    result = tracker.run(frames, fps=25)
    points = {p.frame: p for p in result.points()}
    assert [points[t].source for t in range(6)] == ["detected"] * 3 + [REDETECTED] * 2 + ["detected"]
    assert np.allclose(points[3].centre, (160, 240), atol=1) and np.allclose(points[4].centre, (180, 240), atol=1)
    assert whole.calls == 6 and window.calls == 2 and window.shapes == [(128, 128)] * 2


def test_without_a_track_no_window_is_run():
    frames = _frames([4, 4, 4])  # never found whole: no track, so nothing to look around
    whole, window = WholeFrame(min_side=8), Window()
    result = Tracker(whole, TrackSettings(), window=window, window_side=128).run(frames, fps=25)
    assert result.tracks == [] and window.calls == 0 and result.window_calls == 0


def test_a_synthetic_clip_puts_the_ball_where_its_label_says():
    background = np.full((360, 640, 3), 40, np.uint8)
    patch = np.full((20, 20, 3), 250, np.uint8)
    mask = np.ones((20, 20), np.float32)
    settings = ClipSettings(frames=12, width=640, height=360, ball_px=12, hidden=(5,), blur=False)
    frames, labels = make_clip(background, patch, mask, settings)
    for i, (frame, label) in enumerate(zip(frames, labels)):
        bright = np.argwhere(frame[:, :, 0] > 200)
        if i == 5:
            assert not label.visible and len(bright) == 0
            continue
        cy, cx = bright.mean(axis=0)
        assert label.visible and abs(cx - label.x) <= 1 and abs(cy - label.y) <= 1


def test_bad_input_is_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["track", str(empty), "--weights", "model.safetensors", "--out", str(tmp_path / "o")]) == 2
    assert f"{empty}: no images" in capsys.readouterr().err
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"not a video")
    assert main(["track", str(video), "--weights", "model.safetensors", "--out", str(tmp_path / "o")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), np.zeros((64, 64, 3), np.uint8))
    labels = tmp_path / "Label.csv"
    write_label_csv(labels, {"a.png": BallLabel(False, 0, 0), "zz.png": BallLabel(True, 1, 1)})
    with pytest.raises(ConfigError, match=r"Label\.csv: 1 labelled frame\(s\) are not in .*zz\.png"):
        from mhyolo.track.run import check_labels

        check_labels(labels, read_label_csv(labels), {0: "a.png"}, frames)


@pytest.mark.slow
def test_track_command_writes_every_output_and_scores_a_clip(shared: Path, official_weights: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]):
    """A real ball detector (COCO's "sports ball" rows) on a synthetic clip of a real tennis ball (one those
    rows find) pasted onto a real ball-free frame: tracks.csv, summary.json with both scores, tracks.png and
    track.mp4, and the tracked ball within 10 px of its label in most frames."""
    import csv
    import json

    from helpers.models import sports_ball_model
    from mhyolo.model.weights import save_checkpoint
    from mhyolo.track.synthetic import ball_free_images, ball_patch, write_clip

    weights = tmp_path / "ball.safetensors"
    save_checkpoint(weights, sports_ball_model(official_weights), {})
    photo = sorted((shared / "data" / "seed_balls" / "images").glob("tennis*"))[0]
    patch, mask = ball_patch(photo, shared / "data" / "seed_balls" / "labels" / f"{photo.stem}.txt")
    background = cv2.imread(str(ball_free_images(shared / "data" / "basketball_f2rlv")[0]))
    frames, labels = make_clip(background, patch, mask, ClipSettings(frames=12, width=640, height=360, ball_px=64,
                                                                     hidden=(6,), seed=2))
    clip = write_clip(tmp_path / "clip", frames, labels)
    out = tmp_path / "run"
    assert main(["track", str(clip), "--weights", str(weights), "--imgsz", "640", "--conf", "0.05", "--out", str(out),
                 "--eval", str(clip / "Label.csv")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["model_calls"] == 12
    assert [s["tolerance_px"] for s in summary["scores"]["tracked"]] == [5.0, 10.0]
    rows = list(csv.DictReader((out / "tracks.csv").open()))
    assert rows and set(rows[0]) == {"frame", "time", "track", "x", "y", "w", "h", "score", "type", "source",
                                     "interpolated", "speed"}
    assert sum(s["tp"] + s["fp"] for s in summary["scores"]["tracked"][:1]) == len({r["frame"] for r in rows})
    assert summary["scores"]["tracked"][1]["tp"] >= 8  # of 11 frames where the ball is visible
    assert (out / "tracks.png").stat().st_size > 0 and (out / "track.mp4").stat().st_size > 0
    assert "tracked: F1@5px" in capsys.readouterr().err
    # the throughput mode (the default) overlaps the whole-frame calls and changes no track
    one_by_one = tmp_path / "one_by_one"
    assert main(["track", str(clip), "--weights", str(weights), "--imgsz", "640", "--conf", "0.05", "--out",
                 str(one_by_one), "--no-throughput", "--no-video"]) == 0
    assert (one_by_one / "tracks.csv").read_text() == (out / "tracks.csv").read_text()


def test_a_box_of_another_size_is_another_object():
    tracker = SingleBallTracker(MotionSettings(max_step=60, size_ratio=2.0))
    for t in range(3):
        tracker.update(t, [_ball(100 + 20 * t, 200, side=10)])
    # on the path, but a head-sized box (50 px) and a speck (3 px): neither is the 10-px ball
    assert tracker.update(3, [_ball(160, 200, 0.9, side=50), _ball(160, 200, 0.9, side=3)]) is None
    point = tracker.update(4, [_ball(180, 200, 0.9, side=50), _ball(181, 201, 0.2, side=12)])
    assert point is not None and np.allclose(point.centre, (181, 201))


def _run_many(frames_of_candidates: list[list[Candidate]], settings: MotionSettings | None = None):
    from mhyolo.track.multi import MultiBallTracker

    tracker = MultiBallTracker(settings or MotionSettings(max_step=40, still_frames=0))
    for t, found in enumerate(frames_of_candidates):
        taken, left = tracker.assign(t, found)
        for track in list(tracker.live):
            chosen = taken.get(track.id)
            tracker.miss(track) if chosen is None else tracker.accept(track, t, chosen)
        tracker.start(t, left)
    return {track.id: {p.frame: p.centre for p in track.points} for track in tracker.tracks()}


def test_two_crossing_balls_keep_their_tracks():
    """Ball A goes right and down, ball B left and down; they pass 12 px apart at frame 10 (both inside each
    other's 40-px gate), yet each keeps one track (assigned by distance to where each track expects it)."""
    from mhyolo.track.metrics import score_identities

    a = [(100 + 20 * t, 200 + 5 * t) for t in range(20)]
    b = [(500 - 20 * t, 212 + 5 * t) for t in range(20)]
    # B scores higher: a track taking the best score in its gate would take B at the crossing
    tracks = _run_many([[_ball(*a[t]), _ball(*b[t], 0.95)] for t in range(20)])
    balls = [[BallLabel(True, x, y) for x, y in path] for path in (a, b)]
    score = score_identities(tracks, balls, tolerance=5.0)
    assert len(tracks) == 2 and score.switches == 0 and score.fragments == 0 and score.matched == 40


def test_identity_figures_by_hand():
    from mhyolo.track.metrics import score_identities

    ball = [BallLabel(True, 10.0 * t, 0.0) for t in range(6)]
    tracks = {1: {0: np.array([0.0, 0]), 1: np.array([10.0, 0]), 4: np.array([40.0, 0])},
              2: {2: np.array([20.0, 1]), 3: np.array([30.0, 0])},  # took the ball over for two frames
              3: {5: np.array([80.0, 0])}}  # too far: no match in frame 5
    score = score_identities(tracks, [ball], tolerance=5.0)
    assert (score.switches, score.fragments, score.matched, score.visible) == (2, 1, 5, 6)


def test_several_balls_get_a_window_each_where_they_were_lost():
    from dataclasses import replace as change

    frames = _frames([12, 12, 12, 7, 12])  # one ball, too small whole in frame 3
    for frame in frames:  # a second ball, always found, lower in the frame
        frame.image[380:392, 300:312] = 255
    whole, window = WholeFrame(min_side=8), Window()
    settings = TrackSettings(motion=MotionSettings(max_step=40, still_frames=0), many=True)
    result = Tracker(_TwoBalls(whole), settings, window=window, window_side=64).run(frames, fps=25)
    sources = {(p.track, p.frame): p.source for p in result.points()}
    assert sources[(1, 3)] == REDETECTED and window.calls == 1  # only the lost ball's track looked again
    assert {p.track for p in result.points()} == {1, 2}
    assert change(settings, many=False).many is False


class _TwoBalls:
    """Both white squares of a frame, each found while at least `min_side` px."""

    def __init__(self, whole: WholeFrame) -> None:
        self.whole = whole

    def predict(self, images):
        image = images[0]
        boxes, scores = [], []
        for rows in (slice(0, 320), slice(320, 480)):
            part = image.copy()
            part[[r for r in range(480) if not rows.start <= r < rows.stop]] = 0
            found = _white_square(part, self.whole.min_side)
            boxes += found.boxes.tolist()
            scores += found.scores.tolist()
        return [Found(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32))]
