"""Pictures a person looks at after training or validation. Each function writes one PNG.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so nothing depends on a display or on global pyplot state and plots can be
made from worker threads. Boxes are drawn with OpenCV on the images themselves.

Public API:
    plot_pr_curve(metrics: DetectionMetrics, path) -> Path
    plot_confusion_matrix(matrix, names, path, title="Confusion matrix") -> Path
    plot_training_curves(csv_path, path=None) -> Path   # default: results.png beside the CSV
    draw_boxes(image, boxes, classes, names, scores=None, color=None) -> np.ndarray
    plot_image_grid(images, results: list[ImageResult], names, path, tile=320, columns=2) -> Path

Sizes: PR curve 900x600 px, confusion matrix 1400x600 px, training curves
300x250 px per column subplot (at most 5 per row), image grid
columns * 2 * tile wide and ceil(n / columns) * tile high.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mhyolo.errors import DataError
from mhyolo.eval.metrics import DetectionMetrics, ImageResult
from mhyolo.infer.preprocess import letterbox

DPI = 100
PR_SIZE = (9.0, 6.0)  # inches
CM_SIZE = (14.0, 6.0)
CURVE_CELL = (3.0, 2.5)
CURVES_PER_ROW = 5
GT_COLOR = (0, 200, 0)  # BGR green

# Distinct BGR colours for predicted classes (cycled).
PALETTE = [(56, 56, 255), (255, 157, 151), (31, 112, 255), (29, 178, 255), (49, 210, 207),
           (10, 249, 72), (187, 212, 0), (168, 153, 44), (255, 194, 0), (147, 69, 52)]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_pr_curve(metrics: DetectionMetrics, path: str | Path) -> Path:
    """Precision-recall at IoU 0.5, one line per class with ground truth plus their mean."""
    fig = Figure(figsize=PR_SIZE, dpi=DPI)
    ax = fig.subplots()
    recall = metrics.recall_grid
    curves = metrics.pr_precision
    per_class = len(metrics.per_class) > 1
    for name, cls, curve in zip(metrics.names, metrics.per_class, curves):
        if per_class and not np.isnan(cls.ap50):
            ax.plot(recall, curve, linewidth=1, label=f"{name} {cls.ap50:.3f}")
    valid = curves[~np.isnan(curves).all(axis=1)]
    if len(valid):
        ax.plot(recall, valid.mean(axis=0), linewidth=3, color="blue",
                label=f"all classes {metrics.map50:.3f} mAP@0.5")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-Recall curve (IoU 0.5)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Counts on the left, rows normalised to 1 on the right (rows = truth, columns = prediction)."""
    cm = np.asarray(matrix, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if cm.shape[0] != len(names):
        raise ValueError(f"confusion matrix is {cm.shape[0]}x{cm.shape[1]} but {len(names)} names were given")
    row_sums = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, row_sums, out=np.zeros_like(cm), where=row_sums > 0)

    fig = Figure(figsize=CM_SIZE, dpi=DPI)
    axes = fig.subplots(1, 2)
    for ax, values, fmt, subtitle in ((axes[0], cm, "{:.0f}", "counts"),
                                      (axes[1], normalised, "{:.2f}", "normalised by true class")):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, labels=list(names), rotation=45, ha="right")
        ax.set_yticks(ticks, labels=list(names))
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(f"{title} ({subtitle})")
        threshold = values.max() / 2 if values.size else 0
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, fmt.format(v), ha="center", va="center",
                    color="white" if v > threshold else "black")
    fig.tight_layout()
    return _save(fig, path)


def _read_results_csv(csv_path: Path) -> tuple[list[str], np.ndarray]:
    """Header names (stripped) and an (epochs, columns) float array; empty cells become nan."""
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read: {exc}") from exc
    if not rows:
        raise DataError(f"{csv_path}: empty file, expected a header line")
    header = [h.strip() for h in rows[0]]
    data = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{csv_path}:{lineno}: {len(row)} fields, header has {len(header)}")
        values = []
        for name, cell in zip(header, row):
            cell = cell.strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                raise DataError(f"{csv_path}:{lineno}: column {name!r}: {cell!r} is not a number") from None
        data.append(values)
    if not data:
        raise DataError(f"{csv_path}: no data rows below the header")
    return header, np.array(data, dtype=np.float64)


def plot_training_curves(csv_path: str | Path, path: str | Path | None = None) -> Path:
    """One subplot per column of results.csv (losses, metrics, learning rates) against epoch.

    The x axis is the 'epoch' column when there is one, otherwise the row number.
    """
    csv_path = Path(csv_path)
    header, data = _read_results_csv(csv_path)
    if "epoch" in header:
        x = data[:, header.index("epoch")]
        columns = [i for i, h in enumerate(header) if h != "epoch"]
    else:
        x = np.arange(len(data), dtype=np.float64)
        columns = list(range(len(header)))
    if not columns:
        raise DataError(f"{csv_path}: no columns to plot besides 'epoch'")

    ncols = min(CURVES_PER_ROW, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(CURVE_CELL[0] * ncols, CURVE_CELL[1] * nrows), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, col in zip(axes, columns):
        ax.plot(x, data[:, col], marker=".", linewidth=1.5)
        ax.set_title(header[col], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, Path(path) if path is not None else csv_path.with_name("results.png"))


def _label(names: Sequence[str], cls: int) -> str:
    return names[cls] if 0 <= cls < len(names) else str(cls)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, names: Sequence[str],
               scores: np.ndarray | None = None,
               color: tuple[int, int, int] | None = None) -> np.ndarray:
    """A copy of a BGR image with xyxy pixel boxes and 'name score' labels drawn on it.

    Without `color`, each class gets its own palette colour.
    """
    out = np.ascontiguousarray(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if len(classes) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes")
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    thickness = max(1, round(max(out.shape[:2]) / 400))
    font_scale = thickness / 3
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        c = color if color is not None else PALETTE[int(cls) % len(PALETTE)]
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thickness)
        text = _label(names, int(cls)) + (f" {float(scores[i]):.2f}" if scores is not None else "")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thickness // 2))
        top = y1 - th - base if y1 - th - base >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), c, -1)
        cv2.putText(out, text, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, thickness // 2), cv2.LINE_AA)
    return out


def _caption(tile: np.ndarray, text: str) -> None:
    """White text on a black strip across the top of a tile, readable on any image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(tile, (0, 0), (tw + 8, th + base + 6), (0, 0, 0), -1)
    cv2.putText(tile, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def plot_image_grid(images: Sequence[np.ndarray], results: Sequence[ImageResult], names: Sequence[str],
                    path: str | Path, tile: int = 320, columns: int = 2) -> Path:
    """Each image twice, side by side: ground truth (green) then predictions (per-class colours).

    `images` are BGR uint8 arrays whose size matches their `ImageResult`.
    """
    if len(images) != len(results):
        raise ValueError(f"{len(images)} images but {len(results)} results")
    if not images:
        raise ValueError("plot_image_grid needs at least one image")
    if tile < 32 or columns < 1:
        raise ValueError(f"tile must be >= 32 and columns >= 1, got {tile} and {columns}")
    rows = math.ceil(len(images) / columns)
    canvas = np.full((rows * tile, columns * 2 * tile, 3), 255, dtype=np.uint8)
    for n, (image, result) in enumerate(zip(images, results)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {n} ({result.name}): expected HxWx3 uint8 BGR, "
                             f"got {image.shape} {image.dtype}")
        if image.shape[:2] != (result.height, result.width):
            raise ValueError(f"image {n} ({result.name}): size {image.shape[1]}x{image.shape[0]} does not "
                             f"match its result {result.width}x{result.height}")
        truth = draw_boxes(image, result.gt_boxes, result.gt_classes, names, color=GT_COLOR)
        preds = draw_boxes(image, result.pred_boxes, result.pred_classes, names, result.pred_scores)
        r, c = divmod(n, columns)
        for k, (panel, caption) in enumerate(((truth, "ground truth"), (preds, "predictions"))):
            boxed, _ = letterbox(panel, tile)
            _caption(boxed, caption)
            x0 = (2 * c + k) * tile
            canvas[r * tile:(r + 1) * tile, x0:x0 + tile] = boxed
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"{path}: could not write the image")
    return path
