"""Tracking a clip: the model's detections per frame, linked by the single-ball tracker; where the live
track finds no detection, the model runs once more on a native-resolution window around where the track
expects the ball (`redetect`), accepting a lower score there; then each track's jumps dropped, gaps
filled, times, speeds and type vote.

The window is the model's own training size cut from the original frame: a 10-px ball of a 1280-px frame
stays 10 px, where the whole-frame pass at the training size shrinks it to 2-3 px.

With `throughput`, the whole-frame passes run in `predict`'s throughput mode (`infer.stream`: model calls
of the next frames in flight while this frame is linked), in frame order, so the tracks are those of the
frame-by-frame run; the window passes, which depend on the track so far, stay in turn.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.sources import Frame
from mhyolo.track.gaps import drop_jumps, fill_gaps, timed, turns, vote_type
from mhyolo.track.motion import BallTrack, Candidate, MotionSettings, SingleBallTracker, fits
from mhyolo.track.multi import MultiBallTracker
from mhyolo.track.points import DETECTED, REDETECTED, TrackPoint


@dataclass(frozen=True)
class TrackSettings:
    motion: MotionSettings = field(default_factory=MotionSettings)
    conf: float = 0.25  # a whole-frame detection's score to be offered to the tracker
    redetect: bool = True
    redetect_conf: float = 0.1  # a detection's score inside the track's window
    max_gap: int = 8  # frames interpolated between two points of a track
    many: bool = False  # several balls at once (`multi.MultiBallTracker`) instead of one
    min_points: int = 3  # with `many`: a track needs this many found points to be kept (a false alarm's is short)

    def __post_init__(self) -> None:
        for name in ("conf", "redetect_conf"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"tracking: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_gap < 0:
            raise ConfigError(f"tracking: max_gap must be 0 or more, got {self.max_gap}")


@dataclass
class TrackResult:
    """Every track's points (after jumps, gaps and timing), per frame the best whole-frame detection (the
    per-frame baseline), the candidate bounces, and what it cost."""

    tracks: list[list[TrackPoint]]
    best_per_frame: dict[int, TrackPoint]
    names: dict[int, str]  # frame number -> frame name (file name, or video:frame)
    turns: dict[int, list[int]]  # track id -> frames of a downward-to-upward turn
    fps: float
    frame_shape: tuple[int, int] = (0, 0)  # (height, width) of the first frame
    frames: int = 0
    model_calls: int = 0
    window_calls: int = 0
    seconds: float = 0.0

    def points(self) -> list[TrackPoint]:
        return sorted((p for track in self.tracks for p in track), key=lambda p: (p.frame, p.track))

    def positions(self, interpolated: bool = True) -> dict[str, np.ndarray | None]:
        """Frame name -> the tracked centre there (the first track's when two overlap), None elsewhere."""
        out: dict[str, np.ndarray | None] = {name: None for name in self.names.values()}
        for point in self.points():
            name = self.names.get(point.frame)
            if name is not None and out[name] is None and (interpolated or not point.interpolated):
                out[name] = point.centre
        return out

    def baseline_positions(self) -> dict[str, np.ndarray | None]:
        """Frame name -> the best whole-frame detection's centre (no tracking)."""
        return {name: (self.best_per_frame[f].centre if f in self.best_per_frame else None)
                for f, name in self.names.items()}

    def summary(self) -> dict[str, Any]:
        points = self.points()
        count = {source: sum(p.source == source for p in points) for source in ("detected", "redetected",
                                                                              "interpolated")}
        return {"frames": self.frames, "tracks": len(self.tracks), "points": count, "model_calls": self.model_calls,
                "window_calls": self.window_calls, "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.frames / self.seconds, 2) if self.seconds else None,
                "turns": {str(k): v for k, v in self.turns.items()}}


def check_labels(path: Path, labels: dict[str, Any], names: dict[int, str], source: Any) -> None:
    """Every labelled frame must be a frame of the source (named as `names` names them)."""
    missing = sorted(set(labels) - set(names.values()))
    if missing:
        raise ConfigError(f"{path}: {len(missing)} labelled frame(s) are not in {source} (first: {missing[0]})")


def candidates(prediction: Any, conf: float, offset: tuple[float, float] = (0.0, 0.0)) -> list[Candidate]:
    """A prediction's boxes scoring at least `conf` (shifted by `offset`, a window's corner), with types."""
    keep = np.flatnonzero(prediction.scores >= conf)
    dx, dy = offset
    names = prediction.type_names  # per box (None where nothing types the boxes)
    out = []
    for i in keep:
        x1, y1, x2, y2 = (float(v) for v in prediction.boxes[i])
        type_name = names[i] if names is not None else None
        out.append(Candidate((x1 + dx, y1 + dy, x2 + dx, y2 + dy), float(prediction.scores[i]), type_name))
    return out


def window_around(centre: np.ndarray, side: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A `side` x `side` window centred on `centre`, moved inside the image (smaller only where the image is)."""
    height, width = shape
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    x0 = min(max(x0, 0), max(width - side, 0))
    y0 = min(max(y0, 0), max(height - side, 0))
    return x0, y0, min(x0 + side, width), min(y0 + side, height)


def _readable(frame: Frame) -> Frame:
    if not frame.ok:
        raise ConfigError(f"{frame.path}: {frame.error}")
    return frame


class Tracker:
    """Runs a predictor over frames and links its detections (see the module's docstring). `window` is
    the re-detection predictor (None: no re-detection) and `window_side` its window's side in pixels;
    `throughput` overlaps the whole-frame passes (`streams` calls in flight, None: the runtime's choice)."""

    def __init__(self, predictor: Any, settings: TrackSettings, window: Any = None, window_side: int = 320,
                 throughput: bool = False, streams: int | None = None) -> None:
        self.predictor = predictor
        self.window = window if settings.redetect else None
        self.window_side = window_side
        self.settings = settings
        self.throughput = throughput
        self.streams = streams

    def whole_frames(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, Any]]:
        """(frame, its whole-frame prediction) in frame order, overlapped in throughput mode."""
        if not self.throughput:
            for frame in frames:
                yield frame, self.predictor.predict([_readable(frame).image])[0]
            return
        from mhyolo.infer.stream import StreamPredictor

        with StreamPredictor(self.predictor, self.streams) as stream:
            yield from stream.predict((frame, _readable(frame).image) for frame in frames)

    def new_motion(self) -> SingleBallTracker | MultiBallTracker:
        """The motion model that links this run's detections (one ball, or several with `many`)."""
        return MultiBallTracker(self.settings.motion) if self.settings.many else SingleBallTracker(self.settings.motion)

    def link(self, motion: SingleBallTracker | MultiBallTracker, number: int, found: list[Candidate],
             image: np.ndarray | None, result: TrackResult) -> list[TrackPoint]:
        """Frame `number`'s detections (`found`) given to the tracks, with re-detection in a window where a
        track finds none (`image` is needed only then); the points the tracks took at this frame."""
        if isinstance(motion, MultiBallTracker):
            return self._step_many(motion, number, found, image, result)
        return self._step_one(motion, number, found, image, result)

    def run(self, frames: Iterable[Frame], fps: float) -> TrackResult:
        motion = self.new_motion()
        result = TrackResult(tracks=[], best_per_frame={}, names={}, turns={}, fps=fps)
        started = time.perf_counter()
        for number, (frame, prediction) in enumerate(self.whole_frames(frames)):
            result.names[number] = frame.name
            if not result.frames:
                result.frame_shape = frame.image.shape[:2]
            result.frames += 1
            result.model_calls += 1
            found = candidates(prediction, self.settings.conf)
            if found:
                best = max(found, key=lambda c: c.score)
                result.best_per_frame[number] = TrackPoint(number, 0, best.box, best.score, best.type_name)
            self.link(motion, number, found, frame.image, result)
        result.seconds = time.perf_counter() - started
        for track in self._kept(motion):
            points = drop_jumps(track.points, self.settings.motion.max_step)
            kind = vote_type(points)
            points = timed(fill_gaps(points, self.settings.max_gap), fps)
            for point in points:
                point.type_name = kind
            result.tracks.append(points)
            result.turns[track.id] = turns(points)
        return result

    def _kept(self, motion: SingleBallTracker | MultiBallTracker) -> list[BallTrack]:
        if isinstance(motion, SingleBallTracker):
            return motion.tracks()
        return [t for t in motion.tracks() if len(t.points) >= self.settings.min_points]

    def _step_one(self, motion: SingleBallTracker, number: int, found: list[Candidate], image: np.ndarray | None,
                  result: TrackResult) -> list[TrackPoint]:
        chosen = motion.choose(number, found)
        source = DETECTED
        if chosen is None and self.window is not None and motion.expected(number) is not None:
            chosen = self._redetect(motion, number, image)
            result.window_calls += 1
            source = REDETECTED
        if chosen is None:
            motion.miss(number)
            return []
        return [motion.accept(number, chosen, source)]

    def _step_many(self, motion: MultiBallTracker, number: int, found: list[Candidate], image: np.ndarray | None,
                   result: TrackResult) -> list[TrackPoint]:
        taken, left = motion.assign(number, found)
        points = []
        for track in list(motion.live):
            chosen, source = taken.get(track.id), DETECTED
            if chosen is None and self.window is not None:
                chosen, source = self._redetect_track(motion, track, number, image), REDETECTED
                result.window_calls += 1
            if chosen is None:
                motion.miss(track)
            else:
                points.append(motion.accept(track, number, chosen, source))
        return points + motion.start(number, left)

    def _window(self, centre: np.ndarray, image: np.ndarray) -> list[Candidate]:
        x0, y0, x1, y1 = window_around(centre, self.window_side, image.shape[:2])
        prediction = self.window.predict([np.ascontiguousarray(image[y0:y1, x0:x1])])[0]
        return candidates(prediction, self.settings.redetect_conf, (x0, y0))

    def _redetect_track(self, motion: MultiBallTracker, track: BallTrack, number: int,
                        image: np.ndarray) -> Candidate | None:
        window = self._window(track.expected(number), image)
        fitting = [c for c in window if fits(track, number, c, motion.settings) is not None]
        return max(fitting, key=lambda c: c.score, default=None)

    def _redetect(self, motion: SingleBallTracker, number: int, image: np.ndarray) -> Candidate | None:
        centre, _ = motion.expected(number)
        return motion.choose(number, self._window(centre, image))
