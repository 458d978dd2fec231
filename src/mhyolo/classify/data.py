"""Crops of a dataset's ground-truth boxes, labelled with their type: the classifier's data.

Every box of a split becomes one crop (`crops.crop_boxes`, the same cut the two-stage model makes
of a detection), cut once and kept in memory: the ball sets are a few hundred boxes. Training adds
a horizontal flip and a small shift/scale of the crop (a detector's box is never exactly the
labelled one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from mhyolo.infer.crops import crop_boxes
from mhyolo.data.dataset import YoloDataset
from mhyolo.data.image_file import read_image
from mhyolo.data.spec import DataSpec
from mhyolo.errors import DataError

JITTER_TRANSLATE = 0.06  # share of the crop side
JITTER_SCALE = (0.9, 1.1)


def type_names(spec: DataSpec) -> list[str]:
    """The names of the label ids: the data.yaml's `type_names` when it has them, else `names`."""
    return list(spec.type_names or spec.names)


@dataclass
class CropSet:
    """All crops of one split: RGB uint8 (n, S, S, 3), their type ids, and where each came from."""

    crops: np.ndarray
    labels: np.ndarray  # (n,) int64
    sources: list[str]  # "path#box index", for messages and plots
    names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def split_crops(spec: DataSpec, split: str, size: int, margin: float, progress: bool = True) -> CropSet:
    """One crop per ground-truth box of `split`, in file order."""
    dataset = YoloDataset(spec, split, imgsz=size, augment=None, progress=progress)
    crops, labels, sources = [], [], []
    for path, rows in tqdm(list(zip(dataset.files, dataset.labels)), desc=f"crops ({split})", unit="img",
                           leave=False, disable=not progress):
        if not len(rows):
            continue
        image = read_image(path)
        height, width = image.shape[:2]
        cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        crops.append(crop_boxes(image, boxes, size, margin))
        labels.append(rows[:, 0].astype(np.int64))
        sources.extend(f"{path}#{i}" for i in range(len(rows)))
    if not crops:
        raise DataError(f"{spec.yaml_path}: split '{split}' has no labelled boxes to crop")
    return CropSet(crops=np.concatenate(crops), labels=np.concatenate(labels), sources=sources,
                   names=type_names(spec))


class Jitter:
    """Random horizontal flip and shift/scale of a batch of crops, each its own (torchvision v2)."""

    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.transform = v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=0.0, translate=(JITTER_TRANSLATE, JITTER_TRANSLATE), scale=JITTER_SCALE,
                            fill=114),
        ])

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, S, S) -> uint8 (n, 3, S, S)."""
        return torch.stack([self.transform(crop) for crop in crops])
