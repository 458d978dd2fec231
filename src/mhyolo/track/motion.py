"""The single-ball tracker: where the ball should be next, and which detection is it.

A ball in flight moves smoothly between frames, so a track predicts the next centre from its last
detected points (constant acceleration from three points, constant velocity from two, standing still
from one; each step scaled by the frames between them) and accepts the best-scoring detection inside a
gate around that prediction, of a size within `size_ratio` of the track's recent boxes (a ball does not
grow or shrink several times between frames). The gate is `max_step` pixels per elapsed frame: a false alarm far from
where the ball is going is never taken, however high its score. Without an accepted detection for more
than `max_misses` frames the track ends, and the next detection of at least `start_score` starts a new
one (as in the online tracker of the WASB ball-detection benchmark).

A ball in play moves; a false alarm (a light, a logo, a head) does not. A track whose last `still_frames`
points all lie within `still_px` of their mean is dropped as a still false alarm, and no track starts
within the gate of that place again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.track.points import DETECTED, BoxGeometry, TrackPoint


@dataclass(frozen=True)
class MotionSettings:
    max_step: float = 80.0  # pixels a ball may move per frame (gate radius per elapsed frame)
    max_misses: int = 8  # frames without an accepted detection before the track ends
    start_score: float = 0.25  # the score a detection needs to start a track
    min_gate: float = 16.0  # pixels: the gate never shrinks below this (a ball standing still)
    still_frames: int = 10  # a track this long that has not moved is a still false alarm (0: never)
    still_px: float = 3.0  # pixels: "has not moved"
    size_ratio: float = 2.0  # a box more than this many times larger or smaller than the track's is another object

    def __post_init__(self) -> None:
        for name in ("max_step", "min_gate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"tracking: {name} must be positive, got {getattr(self, name)}")
        if self.size_ratio < 1.0:
            raise ConfigError(f"tracking: size_ratio must be at least 1, got {self.size_ratio}")
        if self.max_misses < 0:
            raise ConfigError(f"tracking: max_misses must be 0 or more, got {self.max_misses}")
        if not 0.0 <= self.start_score <= 1.0:
            raise ConfigError(f"tracking: start_score must be in [0, 1], got {self.start_score}")


@dataclass
class Candidate(BoxGeometry):
    """A detection offered to the tracker: box (xyxy), score, type name."""

    box: tuple[float, float, float, float]
    score: float
    type_name: str | None = None


    def point(self, frame: int, track: int, source: str) -> TrackPoint:
        """The candidate as the point `track` takes at `frame`."""
        return TrackPoint(frame=frame, track=track, box=tuple(float(v) for v in self.box), score=float(self.score),
                          type_name=self.type_name, source=source)


def predict_centre(points: list[TrackPoint], frame: int) -> np.ndarray:
    """The centre expected at `frame` from the track's last (up to three) points, by a polynomial in the
    frame number through them: constant acceleration, constant velocity, or the last position."""
    recent = points[-3:]
    t = np.array([p.frame for p in recent], np.float64)
    xy = np.stack([p.centre for p in recent])
    degree = len(recent) - 1
    if degree == 0:
        return xy[-1]
    coefficients = [np.polyfit(t - t[-1], xy[:, k], degree) for k in range(2)]
    return np.array([np.polyval(c, frame - t[-1]) for c in coefficients])


@dataclass
class BallTrack:
    """One ball's track: its points (detected or re-detected) and how many frames it has missed."""

    id: int
    points: list[TrackPoint] = field(default_factory=list)
    misses: int = 0

    @property
    def last_frame(self) -> int:
        return self.points[-1].frame

    def expected(self, frame: int) -> np.ndarray:
        return predict_centre(self.points, frame)

    def gate(self, frame: int, settings: MotionSettings) -> float:
        return max(settings.min_gate, settings.max_step * (frame - self.last_frame))

    def side(self) -> float:
        """The median box side (sqrt of the area) of the track's last five points."""
        return float(np.median([p.side for p in self.points[-5:]]))


def fits(track: BallTrack, frame: int, candidate: Candidate, settings: MotionSettings) -> float | None:
    """The candidate's distance from where `track` expects its ball at `frame`, or None outside the track's
    gate or size gate."""
    side, ratio = track.side(), settings.size_ratio
    if not side / ratio <= candidate.side <= side * ratio:
        return None
    distance = float(np.linalg.norm(candidate.centre - track.expected(frame)))
    return distance if distance <= track.gate(frame, settings) else None


def still_place(track: BallTrack, settings: MotionSettings) -> np.ndarray | None:
    """Where the track has stood still over its last `still_frames` points (a false alarm), else None."""
    n = settings.still_frames
    if n <= 0 or len(track.points) < n:
        return None
    centres = np.stack([p.centre for p in track.points[-n:]])
    mean = centres.mean(axis=0)
    return mean if np.linalg.norm(centres - mean, axis=1).max() <= settings.still_px else None


def near_still(candidate: Candidate, places: list[np.ndarray], settings: MotionSettings) -> bool:
    """Whether `candidate` stands where a still false alarm was dropped."""
    return any(np.linalg.norm(candidate.centre - place) <= settings.min_gate for place in places)


class SingleBallTracker:
    """One ball at a time: `update(frame, candidates)` returns the track's point for the frame (None when
    no detection fits); `expected(frame)` is where a detection is looked for (None without a live track)."""

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self.track: BallTrack | None = None
        self.finished: list[BallTrack] = []
        self.still: list[np.ndarray] = []  # places of dropped still false alarms
        self._next_id = 1

    def expected(self, frame: int) -> tuple[np.ndarray, float] | None:
        """The predicted centre and the gate radius at `frame`, or None when no track is live."""
        if self.track is None:
            return None
        return self.track.expected(frame), self.track.gate(frame, self.settings)

    def choose(self, frame: int, candidates: list[Candidate]) -> Candidate | None:
        """The detection the live track takes at `frame`: the best score inside the gate (the nearest on a
        tie); without a live track, the best score of at least `start_score`."""
        if self.track is None:
            starters = [c for c in candidates
                        if c.score >= self.settings.start_score and not near_still(c, self.still, self.settings)]
            return max(starters, key=lambda c: c.score, default=None)
        inside = [(c, fits(self.track, frame, c, self.settings)) for c in candidates]
        inside = [(c, d) for c, d in inside if d is not None]
        if not inside:
            return None
        return max(inside, key=lambda cd: (cd[0].score, -cd[1]))[0]

    def update(self, frame: int, candidates: list[Candidate], source: str = DETECTED) -> TrackPoint | None:
        """`choose`, then `accept` the chosen detection or count a `miss`."""
        chosen = self.choose(frame, candidates)
        if chosen is None:
            self.miss(frame)
            return None
        return self.accept(frame, chosen, source)

    def accept(self, frame: int, chosen: Candidate, source: str = DETECTED) -> TrackPoint:
        """Add `chosen` to the live track (starting one when none is live)."""
        if self.track is None:
            self.track = BallTrack(self._next_id)
            self._next_id += 1
        point = chosen.point(frame, self.track.id, source)
        self.track.points.append(point)
        self.track.misses = 0
        place = still_place(self.track, self.settings)
        if place is not None:
            self.still.append(place)
            self.track = None  # dropped, not finished: it was never a ball in play
        return point

    def miss(self, frame: int) -> None:
        """No detection for the live track at `frame`; it ends after `max_misses` such frames."""
        if self.track is None:
            return
        self.track.misses += 1
        if self.track.misses > self.settings.max_misses:
            self.close()

    def close(self) -> None:
        if self.track is not None:
            self.finished.append(self.track)
            self.track = None

    def tracks(self) -> list[BallTrack]:
        """Every track, finished ones first, the live one last."""
        return self.finished + ([self.track] if self.track is not None else [])
