"""The student: the given weights fine-tuned on the labelled data (if any) plus the pseudo-labelled
images, with the existing trainer and training settings.

Its data is one `data.yaml` naming the labelled train entries and the pseudo images, with
`ignore_regions: true` so the teacher's unsure boxes leave the objectness loss alone. The labelled
val split is what training validates on and picks `best` by; without one, the labelled train images
(else the pseudo-labelled ones) stand in and are scored once, after the last epoch (images the
student trains on are no measure to pick an epoch by), so `best` is the last epoch's weights. When
every target is already labelled (a corrected pseudo folder given back), the labelled data alone trains. The student keeps the weights' own architecture
and classes (`model: null`, no `class_init`); everything else comes from the training settings
(`--hyp`, the shipped `multihead` by default), with few epochs and mosaic off for the second half.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from mhyolo.config import load_config
from mhyolo.data.spec import DataSpec
from mhyolo.defaults import training_file
from mhyolo.errors import DataError
from mhyolo.train.config import TrainConfig


def kept_targets(pseudo_images: Path) -> list[Path]:
    """The pseudo-labelled images holding at least one kept box (a non-empty label file)."""
    labels = pseudo_images.parent / "labels"
    return [image for image in sorted(pseudo_images.iterdir())
            if (labels / f"{image.stem}.txt").is_file() and (labels / f"{image.stem}.txt").stat().st_size > 0]


def student_data(path: Path, pseudo_images: Path, labelled: DataSpec | None, names: list[str],
                 empty_targets: bool = False) -> bool:
    """Write the student's data.yaml at `path`; returns whether it validates on labelled images.

    The student trains on the target images where the teacher kept a box; with `empty_targets` also on
    those where it kept none, as ball-free images. Off by default: on held-out sources most such images
    hold balls the teacher missed, which the student then learns as background (README, *Adapting to
    your own footage*)."""
    # absolute: a relative `path:` is read from the yaml's own folder, not the working directory
    # (`--out runs/adapt` once made it runs/adapt/runs/adapt)
    path, pseudo_images = path.absolute(), pseudo_images.absolute()
    entries = labelled.splits if labelled is not None else {}
    if empty_targets:
        pseudo = [str(pseudo_images)] if any(pseudo_images.iterdir()) else []  # every target may be labelled already
    else:
        kept = kept_targets(pseudo_images)
        listing = path.with_name(path.stem + "_targets.txt")
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{image}\n" for image in kept), encoding="utf-8")
        pseudo = [str(listing)] if kept else []
    labelled_train = [str(entry.path) for entry in entries.get("train", [])]
    train = labelled_train + pseudo
    if not train:
        raise DataError(f"{pseudo_images}: no pseudo-labelled image and no labelled train split: nothing to train on")
    real_val = "val" in entries
    # without labelled val images: the labelled train images, else the pseudo-labelled ones, stand in
    val = [str(entry.path) for entry in entries["val"]] if real_val else labelled_train or pseudo
    spec: dict[str, object] = {
        # a labelled .txt list's relative lines start at its own root
        "path": str(labelled.root if labelled is not None else path.parent),
        "train": train, "val": val, "nc": len(names), "names": list(names), "ignore_regions": True}
    if labelled is not None and labelled.type_names:
        spec["type_names"] = list(labelled.type_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return real_val


def student_config(hyp: str, data_yaml: Path, weights: Path, imgsz: int, epochs: int, batch: int,
                   single_class: bool, real_val: bool, device: str = "cpu", workers: int = 2,
                   seed: int = 0) -> TrainConfig:
    """The training settings of `hyp` for fine-tuning `weights` as they are on the student's data."""
    overrides = {"data": str(data_yaml), "weights": str(weights), "epochs": epochs, "imgsz": imgsz, "batch": batch,
                 "device": device, "workers": workers, "seed": seed, "single_class": single_class,
                 "val_every": 1 if real_val else epochs}
    train = load_config(TrainConfig, training_file(hyp), overrides)
    return replace(train, model=None, class_init=None, close_mosaic=min(train.close_mosaic, epochs // 2))
