"""Scores of a crop classifier on crops of ground-truth boxes: accuracy, per-type precision /
recall / F1 and the confusion matrix (`mhyolo classify val`, and the end of every training run),
plus the loss/accuracy curves of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.classify.data import CropSet
from mhyolo.eval.classification import classification_report


@dataclass
class CropScores:
    names: list[str]
    accuracy: float
    per_type: dict[str, dict[str, float]]  # name -> precision, recall, f1, support
    confusion_matrix: np.ndarray  # (K, K), rows = truth
    crops: int

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "crops": self.crops, "names": list(self.names),
                "per_type": self.per_type, "confusion_matrix": self.confusion_matrix.tolist()}

    def table(self) -> str:
        width = max(len("type"), *(len(n) for n in self.names))
        lines = [f"crops {self.crops}, accuracy {self.accuracy:.3f}",
                 f"{'type':<{width}}  precision  recall     F1  support"]
        for name in self.names:
            row = self.per_type[name]
            lines.append(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                         f"{row['support']:7d}")
        lines.append("confusion matrix (rows: truth, columns: predicted): "
                     + "; ".join(f"{n}: {r.tolist()}" for n, r in zip(self.names, self.confusion_matrix)))
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str = "Confusion matrix") -> Path:
        from mhyolo.eval.plots import plot_confusion_matrix

        return plot_confusion_matrix(self.confusion_matrix, self.names, path, title=title)


def scores_of(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> CropScores:
    """Scores of (n, K) probabilities against the true type ids."""
    report = classification_report(labels, probs.argmax(axis=1), names)
    return CropScores(names=list(names), accuracy=report["accuracy"], per_type=report["per_class"],
                      confusion_matrix=report["confusion_matrix"], crops=int(len(labels)))


def score_crops(classifier: Any, data: CropSet) -> CropScores:
    """Run `classifier` (a `ClassifierBackend`) on every crop of `data` and score it."""
    from mhyolo.infer.crop_types import check_types_match, classify_crops

    check_types_match(classifier, data.names, "the dataset")
    return scores_of(classify_crops(classifier, data.crops), data.labels, data.names)


def plot_curves(csv_path: str | Path, path: str | Path) -> Path:
    """Loss and accuracy per epoch, train against val, side by side (from the run's results.csv)."""
    import csv

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with Path(csv_path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    epoch = [int(row["epoch"]) for row in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    for ax, what in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for split in ("train", "val"):
            ax.plot(epoch, [float(row[f"{split}/{what}"]) for row in rows], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    FigureCanvasAgg(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
