"""The real images the benchmark times end to end and in throughput mode.

A model call costs the same on any input, but decoding, NMS and types depend on what the image
holds, so end-to-end time is measured on real photos: the first images of the dataset's
validation split that hold a labelled object (then the others), or the first of the photos INT8
was calibrated on when there is no dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mhyolo.data.pairing import split_images
from mhyolo.data.spec import label_path_for, load_data_spec
from mhyolo.errors import DataError
from mhyolo.infer.sources import read_image

STREAM_FRAMES = 8  # images per throughput-mode call; the first is also the end-to-end image


def sample_frames(data_yaml: Path, count: int = STREAM_FRAMES) -> tuple[list[np.ndarray], list[Path]]:
    """`count` BGR images of `data_yaml`'s val split (its train split when it has none), those with a
    labelled object first, in file order, and their files; fewer when the split holds fewer."""
    spec = load_data_spec(data_yaml)
    split = "val" if "val" in spec.splits else "train"
    labelled: list[Path] = []
    others: list[Path] = []
    for path in split_images(spec, split):
        (labelled if _labelled(path) else others).append(path)
        if len(labelled) == count:
            break
    files = (labelled + others)[:count]
    if not files:
        raise DataError(f"{spec.yaml_path}: split '{split}' has no images to time end to end")
    frames = []
    for path in files:
        image, error = read_image(path)
        if image is None:
            raise DataError(f"{path}: {error}")
        frames.append(image)
    return frames, files


def _labelled(image: Path) -> bool:
    label = label_path_for(image)
    return label.is_file() and label.stat().st_size > 0
