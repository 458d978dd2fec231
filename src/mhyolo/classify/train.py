"""`train_classifier`: a crop classifier trained on a dataset's ground-truth boxes, seed 002's way.

Seed 002 trained ResNet26d with cross-entropy for 5 epochs at batch 32 on 224x224 images, once
with max pooling and Adam (lr 1e-3), once with average pooling and SGD (lr 0.01, momentum 0.8);
those two are the shipped presets (`seed002-model1`, `seed002-model2`); `yolov5n-backbone` is the
COCO-pretrained YOLOv5n backbone fine-tuned with Adam (BatchNorm statistics kept, see
`CropClassifierNet`). A run folder holds `config.yaml` (the settings), `results.csv` (one row per
epoch: train and val loss/accuracy, learning rate), `curves.png` (loss and accuracy, train against
val, as the seed plotted them), `results.png`, `confusion_matrix.png` (best weights on val),
`metrics.json` (val and, when the data has one, test scores of the best and the last weights) and
`weights/best|last.safetensors` (best: highest val accuracy, the first on ties).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from tqdm import tqdm

from mhyolo.classify.checkpoint import save_classifier
from mhyolo.infer.crops import DEFAULT_MARGIN
from mhyolo.classify.data import CropSet, Jitter, split_crops, type_names
from mhyolo.infer.crop_types import to_input
from mhyolo.classify.evaluate import CropScores, score_crops
from mhyolo.classify.model import YOLO_BACKBONE, ClassifierSpec, CropClassifierNet, build_classifier
from mhyolo.config import load_config, to_dict
from mhyolo.data.spec import load_data_spec
from mhyolo.defaults import path_or_shipped
from mhyolo.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}  # from scratch (seed 002's rates)
FINE_TUNE_FACTOR = 0.1  # a pretrained body is fine-tuned at a tenth of that (1e-4 Adam: 0.87 val accuracy
# after 4 epochs on 61 crops of the ball set, where 1e-3 left it at chance)
COLUMNS = ("epoch", "train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "seconds")


@dataclass
class ClassifyConfig:
    """A classifier run's settings (a preset YAML, then command-line flags)."""

    data: str = ""
    model: str = "resnet26d"  # a timm model name, or yolov5n-backbone (COCO-pretrained)
    pool: str = "avg"  # avg | max: timm's global_pool
    optim: str = "sgd"  # sgd | adam
    lr: float | None = None  # None: 0.01 for SGD, 0.001 for Adam; a tenth of that for a pretrained body
    momentum: float = 0.8  # SGD only
    epochs: int = 5
    batch: int = 32
    imgsz: int = 224
    margin: float = DEFAULT_MARGIN
    pretrained: bool = False  # timm: ImageNet weights (needs the hub); yolov5n-backbone: COCO (always local)
    augment: bool = True  # flip + small shift/scale of each training crop
    seed: int = 0
    test_split: str | None = "test"  # also scored at the end when the data has it

    def check(self) -> None:
        if not self.data:
            raise ConfigError("classify train: --data (a data.yaml) is required")
        if self.optim not in OPTIMIZERS:
            raise ConfigError(f"--optim must be one of {', '.join(OPTIMIZERS)}, got {self.optim!r}")
        if self.epochs < 1 or self.batch < 1:
            raise ConfigError(f"--epochs and --batch must be at least 1 (got {self.epochs}, {self.batch})")

    @property
    def starts_pretrained(self) -> bool:
        """ImageNet weights when asked; the YOLOv5n backbone always starts from COCO's."""
        return self.pretrained or self.model == YOLO_BACKBONE

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_LR[self.optim] * (FINE_TUNE_FACTOR if self.starts_pretrained else 1.0)


def presets() -> dict[str, Path]:
    """The shipped presets by name (`seed002-model1`, `seed002-model2`)."""
    folder = Path(str(resources.files("mhyolo.classify") / "presets"))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def load_classify_config(preset: str | None, overrides: dict[str, Any]) -> ClassifyConfig:
    """Defaults, then the preset (a YAML file, else a shipped name: a file wins), then the flags
    that were given."""
    path = None if preset is None else path_or_shipped(preset, presets(), "--preset")
    config = load_config(ClassifyConfig, path, overrides)
    config.check()
    return config


@dataclass
class ClassifyResult:
    out: Path
    best: Path
    last: Path
    metrics: dict[str, Any]


def _optimizer(config: ClassifyConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optim == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    return torch.optim.SGD(net.parameters(), lr=config.learning_rate, momentum=config.momentum)


def _train_epoch(net: CropClassifierNet, data: CropSet, config: ClassifyConfig, optimizer: torch.optim.Optimizer,
                 jitter: Jitter | None, epoch: int, progress: bool) -> tuple[float, float]:
    """Mean loss and accuracy over one shuffled pass (seeded by (seed, epoch))."""
    net.train()
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    order = torch.randperm(len(data), generator=generator)
    crops = torch.from_numpy(np.ascontiguousarray(data.crops)).permute(0, 3, 1, 2)
    labels = torch.from_numpy(data.labels)
    total_loss, correct = 0.0, 0
    bar = tqdm(range(0, len(order), config.batch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
               leave=False, disable=not progress)
    for start in bar:
        index = order[start:start + config.batch]
        batch = crops[index]
        if jitter is not None:
            batch = jitter(batch)
        target = labels[index]
        logits = net(batch.float().div_(255.0))
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(index)
        correct += int((logits.argmax(1) == target).sum())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total_loss / len(data), correct / len(data)


@torch.inference_mode()
def _evaluate(net: CropClassifierNet, data: CropSet, batch: int) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and the (n, K) probabilities of every crop."""
    net.eval()
    losses, probs = [], []
    for start in range(0, len(data), batch):
        logits = net(torch.from_numpy(to_input(data.crops[start:start + batch])))
        target = torch.from_numpy(data.labels[start:start + batch])
        losses.append(F.cross_entropy(logits, target, reduction="sum").item())
        probs.append(logits.softmax(-1).numpy())
    return sum(losses) / len(data), np.concatenate(probs)


def train_classifier(config: ClassifyConfig, out: str | Path, progress: bool = True) -> ClassifyResult:
    """Train, keep the best and last weights, and write the run folder (see the module doc)."""
    config.check()
    out = Path(out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    data_spec = load_data_spec(config.data)
    spec = ClassifierSpec(arch=config.model, names=type_names(data_spec), pool=config.pool, imgsz=config.imgsz,
                          margin=config.margin)
    pretrained = config.starts_pretrained
    net = build_classifier(spec, pretrained=pretrained)  # first: weights that cannot be fetched fail at once
    train = split_crops(data_spec, "train", config.imgsz, config.margin, progress)
    val = split_crops(data_spec, "val", config.imgsz, config.margin, progress)
    optimizer = _optimizer(config, net)
    jitter = Jitter() if config.augment else None
    settings = {**to_dict(config), "pretrained": pretrained, "lr": config.learning_rate, "train_crops": len(train),
                "val_crops": len(val)}
    (out / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    best_path, last_path = out / "weights" / "best.safetensors", out / "weights" / "last.safetensors"
    csv_path = out / "results.csv"
    best_accuracy = -1.0
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for epoch in range(config.epochs):
            start = time.perf_counter()
            train_loss, train_acc = _train_epoch(net, train, config, optimizer, jitter, epoch, progress)
            val_loss, probs = _evaluate(net, val, config.batch)
            val_acc = float((probs.argmax(1) == val.labels).mean())
            seconds = time.perf_counter() - start
            writer.writerow([epoch + 1, f"{train_loss:.5f}", f"{train_acc:.5f}", f"{val_loss:.5f}", f"{val_acc:.5f}",
                             f"{optimizer.param_groups[0]['lr']:.6g}", f"{seconds:.1f}"])
            handle.flush()
            meta = {"train": settings, "epoch": epoch + 1, "val_accuracy": val_acc}
            save_classifier(last_path, net, spec, meta)
            if val_acc > best_accuracy:
                best_accuracy = val_acc
                save_classifier(best_path, net, spec, meta)
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.3f} acc {train_acc:.3f}, "
                      f"val loss {val_loss:.3f} acc {val_acc:.3f} ({seconds:.0f} s)", flush=True)
    metrics = _final_scores(config, data_spec, best_path, last_path, val, out, progress)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _plots(csv_path, out)
    return ClassifyResult(out=out, best=best_path, last=last_path, metrics=metrics)


def _final_scores(config: ClassifyConfig, data_spec, best_path: Path, last_path: Path, val: CropSet, out: Path,
                  progress: bool) -> dict[str, Any]:
    """Val (and test) scores of the best and the last weights; the confusion matrix of the best on val."""
    from mhyolo.classify.backend import load_classifier

    test = None
    if config.test_split and config.test_split in data_spec.splits:
        test = split_crops(data_spec, config.test_split, config.imgsz, config.margin, progress)
    metrics: dict[str, Any] = {}
    for name, path in (("best", best_path), ("last", last_path)):
        classifier = load_classifier(path)
        scores: dict[str, CropScores] = {"val": score_crops(classifier, val)}
        if test is not None:
            scores[config.test_split] = score_crops(classifier, test)
        metrics[name] = {split: s.to_dict() for split, s in scores.items()}
        if name == "best":
            scores["val"].plot(out / "confusion_matrix.png", title="Confusion matrix (val, best)")
    return metrics


def _plots(csv_path: Path, out: Path) -> None:
    from mhyolo.classify.evaluate import plot_curves
    from mhyolo.eval.plots import plot_training_curves

    plot_curves(csv_path, out / "curves.png")
    plot_training_curves(csv_path, out / "results.png")
