"""Annotated images for people: boxes and `name score` labels in a stable colour per class.

The colour depends only on the class (or type) id, so the same kind of object has
the same colour in every image and every frame of a video.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from mhyolo.infer.predictor import Prediction

_GOLDEN = 0.618033988749895  # hue step that keeps consecutive ids far apart on the colour wheel


MASK_ALPHA = 0.4  # a mask's tint: the photo stays readable under it


def class_color(index: int) -> tuple[int, int, int]:
    """A saturated BGR colour that is the same for `index` on every call."""
    hue = (0.1 + index * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def label_for(prediction: Prediction, i: int) -> tuple[str, int]:
    """Text and colour id of box `i`: the type when the model has a type head, else the class; with the
    box's track id (`#3`) when a tracker gave it one."""
    if prediction.has_types:
        text, colour = f"{prediction.type_names[i]} {prediction.type_scores[i]:.2f}", int(prediction.type_ids[i])
    else:
        text, colour = f"{prediction.class_names[i]} {prediction.scores[i]:.2f}", int(prediction.class_ids[i])
    track_ids = getattr(prediction, "track_ids", None)  # a per-box field of a tracked prediction
    if track_ids is not None and track_ids[i] >= 0:
        text = f"#{int(track_ids[i])} {text}"
    return text, colour


def draw_predictions(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    """Return a copy of the BGR `image` with every box of `prediction` drawn and labelled (and its mask
    tinted in the box's colour when the model gives masks)."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    for i, mask in enumerate(getattr(prediction, "masks", None) or []):
        if tuple(mask.image_shape) != (height, width):
            continue
        colour = np.array(class_color(label_for(prediction, i)[1]), np.float32)
        region = canvas[mask.top:mask.top + mask.crop.shape[0], mask.left:mask.left + mask.crop.shape[1]]
        region[mask.crop] = (region[mask.crop] * (1 - MASK_ALPHA) + colour * MASK_ALPHA).astype(np.uint8)
    thickness = max(round((height + width) / 2 * 0.003), 2)
    font_scale = thickness / 3
    font_thickness = max(thickness - 1, 1)
    for i in range(len(prediction)):
        text, color_id = label_for(prediction, i)
        color = class_color(color_id)
        x1, y1, x2, y2 = (int(round(float(v))) for v in prediction.boxes[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
        box_h = text_h + baseline + 2
        top = y1 - box_h if y1 - box_h >= 0 else y1  # label above the box, inside it at the image top
        left = max(min(x1, width - text_w - 2), 0)  # slide left rather than run off the right edge
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + box_h), color, -1, cv2.LINE_AA)
        text_color = (0, 0, 0) if sum(color) / 3 > 150 else (255, 255, 255)
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_color,
                    font_thickness, cv2.LINE_AA)
    return canvas
