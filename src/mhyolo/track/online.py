"""`predict --track`: each box gets the id of the ball track it joins, decided at its own frame.

`mhyolo track` looks back over the whole clip (jumps dropped, gaps filled, windows searched again);
here frames stream out as they are predicted, so the ids are the motion model's online choice: the same
linking (`Tracker.link`: gating by the expected position, one ball or several), without re-detection
windows or anything that needs later frames. A box no track takes has no id (`null` in the JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from mhyolo.infer.predictor import BoxField, Prediction, register_box_field
from mhyolo.track.run import TrackResult, TrackSettings, Tracker, candidates

NO_TRACK = -1  # a box that no track took


class TrackIdField(BoxField):
    """The per-box track id: an int64 array, written as `null` in the JSON where no track took the box."""

    def json_value(self, values: Any, i: int) -> Any:
        value = int(values[i])
        return None if value == NO_TRACK else value


TRACK_FIELD = register_box_field(TrackIdField("track_ids", "track", np.int64))


@dataclass
class TrackedPrediction(Prediction):
    """A `Prediction` whose boxes carry track ids (`NO_TRACK` where none)."""

    track_ids: np.ndarray | None = None  # (n,) int64


class OnlineTrackIds:
    """Call it with each frame's prediction, in frame order: the prediction with its boxes' track ids.
    A frame that could not be read is passed as None (a frame without the ball for the tracks)."""

    def __init__(self, settings: TrackSettings = TrackSettings()) -> None:
        self.tracker = Tracker(None, replace(settings, redetect=False))
        self.motion = self.tracker.new_motion()
        self.result = TrackResult(tracks=[], best_per_frame={}, names={}, turns={}, fps=0.0)
        self.number = 0

    def __call__(self, prediction: Prediction | None) -> TrackedPrediction | None:
        number = self.number
        self.number += 1
        if prediction is None:
            self.tracker.link(self.motion, number, [], None, self.result)
            return None
        found = candidates(prediction, self.tracker.settings.conf)
        points = self.tracker.link(self.motion, number, found, None, self.result)
        ids = np.full(len(prediction), NO_TRACK, np.int64)
        boxes = prediction.boxes.astype(np.float64)
        for point in points:
            # a linked point holds its detection's box: find that box's row
            rows = np.flatnonzero((boxes == np.asarray(point.box, np.float64)).all(axis=1) & (ids == NO_TRACK))
            if rows.size:
                ids[rows[0]] = point.track
        values = {f.name: getattr(prediction, f.name) for f in fields(prediction)}
        return TrackedPrediction(**values, track_ids=ids)
