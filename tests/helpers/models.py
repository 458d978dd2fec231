"""Small real models for tests: the official YOLOv5n cut down to COCO's "sports ball"."""

from __future__ import annotations

from pathlib import Path

import torch

SPORTS_BALL = 32  # COCO class index in the official yolov5n
COCO_OUTPUTS = 85  # per anchor: 4 box, objectness, 80 classes


def sports_ball_model(official: Path, config: str | Path = "yolov5n") -> torch.nn.Module:
    """A one-class model (any config with a one-class Detect, e.g. with a type head) whose
    Detect keeps the box, objectness and sports-ball rows of the COCO weights: a real ball
    detector, so a conversion that breaks it shows in its mAP. Extra heads stay seeded-random."""
    from mhyolo.model.weights import import_official
    from mhyolo.model.yolo import YoloModel

    torch.manual_seed(0)
    model = YoloModel(config, nc=1, names=["ball"])
    state = model.state_dict()
    na = model.detect.na
    rows = torch.tensor([a * COCO_OUTPUTS + j for a in range(na) for j in (0, 1, 2, 3, 4, 5 + SPORTS_BALL)])
    for key, value in import_official(official).state_dict.items():
        if key.startswith("model.24.m.") and value.shape[0] == na * COCO_OUTPUTS:
            value = value[rows]
        if key in state and state[key].shape == value.shape:
            state[key] = value
    model.load_state_dict(state)
    return model.eval()
