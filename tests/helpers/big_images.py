"""Generated datasets of large images with small balls at known places, for the training-window and
copy-paste tests.

Each image's pixels spell out their own coordinates (red = x mod 256, green = y mod 256, blue =
16 x (x div 256) + (y div 256)), so a training sample cut from it at native resolution says where
it was cut (`window_origin`), and the pixels can be compared with the original's crop.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mhyolo.data.labels import write_labels
from mhyolo.data.spec import DataSpec, label_path_for, load_data_spec

TYPE_NAMES = ["basketball", "football", "tennis-ball"]
BALL_COLOURS = {0: (250, 120, 10), 1: (250, 250, 250), 2: (200, 250, 30)}  # RGB per ball type

# name -> (width, height, [(type, x1, y1, x2, y2), ...]) in pixels
Scene = tuple[int, int, list[tuple[int, int, int, int, int]]]
SCENES: dict[str, Scene] = {
    "big_a.png": (1280, 720, [(1, 100, 80, 112, 94), (1, 630, 350, 640, 364), (0, 1200, 650, 1230, 680)]),
    "big_b.png": (960, 960, [(2, 400, 500, 420, 520), (1, 10, 10, 18, 24)]),
    "big_c.png": (1024, 768, []),
    "small_d.png": (400, 300, [(0, 150, 100, 250, 200)]),
    "small_e.png": (320, 320, [(2, 20, 200, 80, 260), (1, 200, 40, 240, 80)]),
}


def coordinate_image(width: int, height: int) -> np.ndarray:
    """An RGB image whose every pixel encodes its (x, y) position (sides up to 4096)."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    image = np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], axis=2)
    return image.astype(np.uint8)


def window_origin(sample: np.ndarray, grid: int = 16) -> tuple[int, int]:
    """Where a native-resolution cut of a `coordinate_image` starts: the most common offset
    decoded at a grid x grid spread of its pixels (balls drawn on it vote for nothing in particular)."""
    h, w = sample.shape[:2]
    rows, cols = np.linspace(0, h - 1, grid).astype(int), np.linspace(0, w - 1, grid).astype(int)
    s = sample[np.ix_(rows, cols)].astype(np.int64)
    xs = s[..., 0] + 256 * (s[..., 2] // 16) - cols[None, :]
    ys = s[..., 1] + 256 * (s[..., 2] % 16) - rows[:, None]
    pairs, counts = np.unique(np.stack([xs.ravel(), ys.ravel()], axis=1), axis=0, return_counts=True)
    x0, y0 = pairs[np.argmax(counts)]
    return int(x0), int(y0)


def draw_scene(width: int, height: int, balls: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """The coordinate image with each ball drawn as the filled ellipse inscribed in its box."""
    image = coordinate_image(width, height)
    for kind, x1, y1, x2, y2 in balls:
        centre = ((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5)
        axes = ((x2 - x1) / 2 - 0.5, (y2 - y1) / 2 - 0.5)
        cv2.ellipse(image, (centre, (2 * axes[0], 2 * axes[1]), 0.0), BALL_COLOURS[kind], -1)
    return image


def write_dataset(root: Path, scenes: dict[str, Scene] = SCENES, names: list[str] = TYPE_NAMES) -> DataSpec:
    """PNG images and YOLO labels under `root/images`, one split used as train and val."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, (width, height, balls) in scenes.items():
        image = draw_scene(width, height, balls)
        cv2.imwrite(str(root / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        labels = yolo_rows(np.array(balls, np.float32).reshape(-1, 5), width, height)
        write_labels(label_path_for(root / "images" / name), labels)
    (root / "data.yaml").write_text(f"train: images\nval: images\nnames: [{', '.join(names)}]\n")
    return load_data_spec(root / "data.yaml")


def pixel_boxes(labels: np.ndarray, size: int) -> np.ndarray:
    """[type, cx, cy, w, h] normalised rows -> pixel xyxy of a `size` square sample."""
    cx, cy, w, h = (np.asarray(labels, np.float64)[:, 1:] * size).T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).reshape(-1, 4)


def yolo_rows(rows: np.ndarray, width: int, height: int) -> np.ndarray:
    """[type, x1, y1, x2, y2] pixel rows -> YOLO label rows [type, cx, cy, w, h] normalised to the image."""
    labels = np.zeros((len(rows), 5), np.float32)
    labels[:, 0] = rows[:, 0]
    labels[:, 1] = (rows[:, 1] + rows[:, 3]) / 2 / width
    labels[:, 2] = (rows[:, 2] + rows[:, 4]) / 2 / height
    labels[:, 3] = (rows[:, 3] - rows[:, 1]) / width
    labels[:, 4] = (rows[:, 4] - rows[:, 2]) / height
    return labels
