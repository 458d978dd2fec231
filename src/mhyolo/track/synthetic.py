"""Synthetic ball clips with known positions, for the tracker's tests and benchmarks (no labelled video ships
here): a real ball cut from a labelled photo, pasted onto a real ball-free frame along a ballistic path
that bounces on a floor line, motion-blurred along its velocity, hidden in some frames (an occluder), at
any size (broadcast-scale 5-15 px or larger)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mhyolo.errors import DataError
from mhyolo.track.metrics import BallLabel, write_label_csv


@dataclass(frozen=True)
class ClipSettings:
    frames: int = 60
    width: int = 1280
    height: int = 720
    ball_px: float = 10.0  # ball diameter in the frame
    speed: float = 14.0  # horizontal pixels per frame
    gravity: float = 0.9  # pixels per frame squared, downwards
    bounce: float = 0.75  # share of the vertical speed kept at a bounce
    hidden: tuple[int, ...] = ()  # frames where the ball is behind something (not drawn, not visible)
    blur: bool = True
    seed: int = 0


def ball_patch(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first labelled ball of a YOLO-labelled photo as a BGR patch and a round mask (the ellipse its
    box encloses), a little larger than the box so the edge is the ball's own."""
    image = cv2.imread(str(image_path))
    if image is None:
        raise DataError(f"{image_path}: cannot read the ball photo")
    rows = [line.split() for line in Path(label_path).read_text().splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{label_path}: no ball labelled: the clip needs a photo with a ball")
    h, w = image.shape[:2]
    _, cx, cy, bw, bh = (float(v) for v in rows[0][:5])
    x1, y1 = int(round((cx - bw / 2) * w)), int(round((cy - bh / 2) * h))
    x2, y2 = int(round((cx + bw / 2) * w)), int(round((cy + bh / 2) * h))
    patch = image[max(y1, 0):y2, max(x1, 0):x2].copy()
    mask = np.zeros(patch.shape[:2], np.float32)
    ph, pw = mask.shape
    cv2.ellipse(mask, (pw // 2, ph // 2), (max(pw // 2 - 1, 1), max(ph // 2 - 1, 1)), 0, 0, 360, 1.0, -1)
    return patch, mask


def path_of(settings: ClipSettings) -> np.ndarray:
    """(frames, 2) ball centres: thrown from the left third, falling under gravity, bouncing on the floor line
    at 85 % of the height, moving right at `speed` (and back at the frame's edge)."""
    rng = np.random.default_rng(settings.seed)
    floor = 0.85 * settings.height
    x, y = rng.uniform(0.1, 0.3) * settings.width, rng.uniform(0.2, 0.4) * settings.height
    vx, vy = settings.speed, rng.uniform(-4.0, 0.0)
    centres = []
    for _ in range(settings.frames):
        centres.append((x, y))
        x, y, vy = x + vx, y + vy, vy + settings.gravity
        if y > floor:
            y, vy = floor - (y - floor), -abs(vy) * settings.bounce
        margin = settings.ball_px
        if not margin <= x <= settings.width - margin:
            vx = -vx
            x = min(max(x, margin), settings.width - margin)
    return np.array(centres, np.float64)


def _paste(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray, centre: np.ndarray, diameter: float,
           velocity: np.ndarray, blur: bool) -> None:
    side = max(int(round(diameter)), 2)
    ball = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA)
    length = int(round(float(np.linalg.norm(velocity)) / 2))
    if blur and length >= 2:  # a straight blur along the motion, as a camera's exposure smears it
        kernel = np.zeros((length, length), np.float32)
        direction = velocity / (np.linalg.norm(velocity) + 1e-9)
        c = (length - 1) / 2
        for t in np.linspace(-c, c, 2 * length):
            kernel[int(round(c + t * direction[1])), int(round(c + t * direction[0]))] = 1.0
        kernel /= kernel.sum()
        pad = length
        ball = cv2.filter2D(cv2.copyMakeBorder(ball, pad, pad, pad, pad, cv2.BORDER_REPLICATE), -1, kernel)
        alpha = cv2.filter2D(cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0), -1, kernel)
        side += 2 * pad
    x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    fx1, fy1 = max(x0, 0), max(y0, 0)
    fx2, fy2 = min(x0 + side, frame.shape[1]), min(y0 + side, frame.shape[0])
    if fx2 <= fx1 or fy2 <= fy1:
        return
    sub = (slice(fy1 - y0, fy2 - y0), slice(fx1 - x0, fx2 - x0))
    a = alpha[sub][..., None]
    region = frame[fy1:fy2, fx1:fx2].astype(np.float32)
    frame[fy1:fy2, fx1:fx2] = np.clip(a * ball[sub] + (1 - a) * region, 0, 255).astype(np.uint8)


def make_clip(background: np.ndarray, patch: np.ndarray, mask: np.ndarray,
              settings: ClipSettings) -> tuple[list[np.ndarray], list[BallLabel]]:
    """The clip's frames (BGR) and each frame's ball label (centre; not visible where hidden)."""
    base = cv2.resize(background, (settings.width, settings.height), interpolation=cv2.INTER_AREA)
    frames = [base.copy() for _ in range(settings.frames)]
    return frames, add_ball(frames, patch, mask, settings)


def add_ball(frames: list[np.ndarray], patch: np.ndarray, mask: np.ndarray, settings: ClipSettings) -> list[BallLabel]:
    """Paste one more ball along its own path (`settings.seed`) into `frames`, in place; its labels."""
    centres = path_of(settings)
    labels = []
    for i, (frame, centre) in enumerate(zip(frames, centres)):
        visible = i not in settings.hidden
        if visible:
            velocity = centres[min(i + 1, len(centres) - 1)] - centres[max(i - 1, 0)]
            _paste(frame, patch, mask, centre, settings.ball_px, velocity / 2, settings.blur)
        labels.append(BallLabel(visible, float(centre[0]), float(centre[1])))
    return labels


def write_clip(folder: Path, frames: list[np.ndarray], labels: list[BallLabel]) -> Path:
    """Frames as `frame_0000.png` ... and their `Label.csv`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    named = {}
    for i, (frame, label) in enumerate(zip(frames, labels)):
        name = f"frame_{i:04d}.png"
        cv2.imwrite(str(folder / name), frame)
        named[name] = label
    write_label_csv(folder / "Label.csv", named)
    return folder


def ball_free_images(data: Path) -> list[Path]:
    """Images of a YOLO dataset folder whose label file is empty (no ball): backgrounds for a clip."""
    found = []
    for label in sorted(Path(data).rglob("*.txt")):
        if label.parent.name == "labels" and label.stat().st_size == 0:
            images = sorted(label.parent.parent.joinpath("images").glob(label.stem + ".*"))
            found += images[:1]
    return found
