"""Several balls at once (a training session, a multi-ball drill): every live track predicts its centre as
the single-ball tracker does (`motion.predict_centre`), and the frame's detections are given to the tracks
by the smallest total distance (the Hungarian assignment, `scipy.optimize.linear_sum_assignment`) among the
pairs inside each track's gate and size gate. A detection no track takes starts a track when it scores at
least `start_score` (not where a still false alarm was dropped); a track that takes none misses, and ends
after `max_misses`. Still tracks are dropped as in `motion`.
"""

from __future__ import annotations

import numpy as np

from mhyolo.track.motion import BallTrack, Candidate, MotionSettings, fits, near_still, still_place
from mhyolo.track.points import DETECTED, TrackPoint

FAR = 1e9  # cost of a pair outside the gates: never assigned


class MultiBallTracker:
    """`assign(frame, candidates)` -> {track id: candidate} and the candidates left; `accept`, `miss` and
    `start` apply the outcome; `live` are the tracks still running."""

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self.live: list[BallTrack] = []
        self.finished: list[BallTrack] = []
        self.still: list[np.ndarray] = []
        self._next_id = 1

    def assign(self, frame: int, candidates: list[Candidate]) -> tuple[dict[int, Candidate], list[Candidate]]:
        if not self.live or not candidates:
            return {}, list(candidates)
        from scipy.optimize import linear_sum_assignment  # here: one ball (and the runtime install) needs no SciPy

        cost = np.full((len(self.live), len(candidates)), FAR)
        for i, track in enumerate(self.live):
            for j, candidate in enumerate(candidates):
                distance = fits(track, frame, candidate, self.settings)
                if distance is not None:
                    cost[i, j] = distance
        rows, cols = linear_sum_assignment(cost)
        taken = {self.live[i].id: candidates[j] for i, j in zip(rows, cols) if cost[i, j] < FAR}
        used = {j for i, j in zip(rows, cols) if cost[i, j] < FAR}
        return taken, [c for j, c in enumerate(candidates) if j not in used]

    def track(self, track_id: int) -> BallTrack:
        return next(t for t in self.live if t.id == track_id)

    def accept(self, track: BallTrack, frame: int, candidate: Candidate, source: str = DETECTED) -> TrackPoint:
        point = candidate.point(frame, track.id, source)
        track.points.append(point)
        track.misses = 0
        place = still_place(track, self.settings)
        if place is not None:
            self.still.append(place)
            self.live.remove(track)  # dropped: never a ball in play
        return point

    def miss(self, track: BallTrack) -> None:
        track.misses += 1
        if track.misses > self.settings.max_misses:
            self.live.remove(track)
            self.finished.append(track)

    def start(self, frame: int, candidates: list[Candidate]) -> list[TrackPoint]:
        """A track for each candidate of at least `start_score`, best first, none where a still false alarm was."""
        points = []
        for candidate in sorted(candidates, key=lambda c: -c.score):
            if candidate.score < self.settings.start_score or near_still(candidate, self.still, self.settings):
                continue
            track = BallTrack(self._next_id)
            self._next_id += 1
            self.live.append(track)
            points.append(self.accept(track, frame, candidate))
        return points

    def tracks(self) -> list[BallTrack]:
        return self.finished + list(self.live)
