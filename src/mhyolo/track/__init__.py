"""Ball tracks in video: detections linked into trajectories, re-detection where a track says the ball is,
gaps filled, speeds and candidate bounces, and the field's distance-tolerance F1 (`mhyolo track`)."""
