"""Small real datasets for tests: a few seed_balls images split into train/val under tmp."""

from __future__ import annotations

import shutil
from pathlib import Path

TYPE_NAMES = ["basketball", "football", "tennis-ball"]


def tiny_ball_dataset(shared: Path, out: Path, per_type_train: int = 4, per_type_val: int = 2) -> Path:
    """Copy the first images of each type from seed_balls; returns the data.yaml path."""
    source = shared / "data" / "seed_balls"
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for type_name in TYPE_NAMES:
        images = sorted((source / "images").glob(f"{type_name.split('-')[0]}*"))
        chosen = images[: per_type_train + per_type_val]
        for i, image in enumerate(chosen):
            split = "train" if i < per_type_train else "val"
            shutil.copy(image, out / "images" / split / image.name)
            shutil.copy(source / "labels" / f"{image.stem}.txt", out / "labels" / split / f"{image.stem}.txt")
    data_yaml = out / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnc: 3\n"
                         f"names: [{', '.join(TYPE_NAMES)}]\n")
    return data_yaml
