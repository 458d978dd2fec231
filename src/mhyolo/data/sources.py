"""Reading one YOLO-format source for a build: verify, remap classes, hash.

A source is a folder with a `data.yaml` and `images/` + `labels/`, flat or split
into train/valid/test as Roboflow and ultralytics export them. Every image is
decoded once: that checks it and gives the thumbnail for the near-duplicate
hash. Boxes of source classes mapped to a target class are kept (renumbered);
boxes of classes mapped to null are dropped and counted. Nothing leaves the
scan without a `Drop` record saying why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mhyolo.data.dedup import image_hash
from mhyolo.data.labels import read_labels
from mhyolo.data.recipe import Recipe, SourceRecipe
from mhyolo.data.spec import label_path_for, load_data_spec
from mhyolo.data.verify import decode_image, list_images, orphan_labels
from mhyolo.errors import ConfigError, DataError


@dataclass(frozen=True)
class Drop:
    """An image (or label file) left out of a build, and why."""

    source: str
    file: str  # path of the file that caused the drop
    line: int  # 1-based line for label problems, else 0
    stage: str  # orphan-label | verify | mixed | duplicate | negatives | sample | balance
    reason: str


@dataclass
class Candidate:
    """A verified source image with its boxes already in target class ids."""

    source: str
    source_index: int  # position of the source in the recipe (earlier wins duplicates)
    path: Path
    rel: str  # path inside the source folder, for reports and stable ordering
    boxes: np.ndarray  # (n, 5) [target_cls, cx, cy, w, h]
    target: int | None  # target class for sampling; None: a negative
    hash: np.ndarray
    source_split: str  # data.yaml split key the image came from
    dropped: tuple[str, ...] = ()  # source class names whose boxes were dropped from this image
    group: int = -1


@dataclass
class SourceScan:
    """What one source yielded: candidates, drops and per-class box counts."""

    source: str
    root: Path
    names: list[str]
    images_seen: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    kept_boxes: Counter = field(default_factory=Counter)  # source class name -> boxes kept
    dropped_boxes: Counter = field(default_factory=Counter)  # source class name -> boxes dropped
    mixed: int = 0  # images whose boxes map to several target classes


def class_map(src: SourceRecipe, names: list[str], targets: list[str], where: str) -> list[int | None]:
    """Target id (or None to drop) for each source class id; every source class must be listed."""
    mapping = {str(k): v for k, v in src.classes.items()}
    missing = [n for n in names if n not in mapping]
    unknown = sorted(set(mapping) - set(names))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"source classes not mapped: {', '.join(missing)} (map each to a target class or null)")
        if unknown:
            parts.append(f"not classes of this source: {', '.join(unknown)}")
        raise ConfigError(f"{where}.classes: {'; '.join(parts)}; the source has {', '.join(names)}")
    return [None if mapping[n] is None else targets.index(mapping[n]) for n in names]


def _image_target(boxes: np.ndarray, policy: str) -> tuple[int | None, bool]:
    """Target class of an image from its kept boxes: (class, is_mixed); class None for a skipped mixed image.

    `majority`: the class with most boxes, ties going to the lower class id.
    """
    classes, counts = np.unique(boxes[:, 0].astype(int), return_counts=True)
    if len(classes) == 1:
        return int(classes[0]), False
    if policy == "skip":
        return None, True
    return int(classes[np.argmax(counts)]), True  # argmax takes the first (lowest id) on ties


def source_folders(src: SourceRecipe, root: Path, where: str) -> tuple[list[str], list[tuple[str, Path]]]:
    """Class names and the (split key, images folder) pairs to read, each folder once."""
    spec = load_data_spec(root)
    wanted = src.splits if src.splits is not None else list(spec.splits)
    unknown = [s for s in wanted if s not in spec.splits]
    if unknown:
        raise ConfigError(f"{where}.splits: {', '.join(unknown)} not in {spec.yaml_path} "
                          f"(has {', '.join(spec.splits) or 'none'})")
    folders: list[tuple[str, Path]] = []
    for split in wanted:
        folder = spec.images_dir(split)
        if not folder.is_dir():
            raise DataError(f"{spec.yaml_path}: '{split}' images folder {folder} does not exist")
        if folder not in [f for _, f in folders]:
            folders.append((split, folder))
    return spec.names, folders


# Decoded-image results of one build, keyed by file: (hash or None, error or None).
HashCache = dict[Path, tuple[np.ndarray | None, str | None]]


def scan_source(recipe: Recipe, index: int, progress: bool = True, cache: HashCache | None = None) -> SourceScan:
    """Verify, remap and hash every image of source `index` of `recipe`.

    `cache` keeps each file's hash for the length of a build, so a folder read twice is decoded once.
    """
    cache = {} if cache is None else cache
    src = recipe.sources[index]
    where = f"sources[{index}] ({src.id})"
    root = recipe.source_path(src)
    if not (root / "data.yaml").is_file() and not (root.is_file() and root.suffix in (".yaml", ".yml")):
        raise DataError(f"{where}: no data.yaml in {root}")
    names, folders = source_folders(src, root, where)
    base = root if root.is_dir() else root.parent
    mapping = class_map(src, names, recipe.classes, where)
    scan = SourceScan(source=src.id, root=base, names=names)
    for split, folder in folders:
        images = list_images(folder)
        scan.images_seen += len(images)
        for label in orphan_labels(folder, images):
            scan.drops.append(Drop(src.id, str(label), 0, "orphan-label", "label file without an image"))
        for image in tqdm(images, desc=f"scan {src.id}/{split}", unit="img", disable=not progress, leave=False):
            _scan_image(recipe, src, image, split, index, mapping, scan, cache)
    return scan


def _scan_image(recipe: Recipe, src: SourceRecipe, image: Path, split: str, index: int,
                mapping: list[int | None], scan: SourceScan, cache: HashCache) -> None:
    if image not in cache:
        small, error = decode_image(image)
        digest = None if small is None else image_hash(small, recipe.dedup.method, recipe.dedup.hash_size)
        cache[image] = (digest, error)
    digest, error = cache[image]
    if error or digest is None:
        scan.drops.append(Drop(src.id, str(image), 0, "verify", error or "image does not decode"))
        return
    label = label_path_for(image)
    boxes, issues = read_labels(label, nc=len(scan.names))
    if issues:  # one drop per image; its reason lists every bad line
        detail = "; ".join(f"line {i.line}: {i.reason}" if i.line else i.reason for i in issues)
        scan.drops.append(Drop(src.id, str(label), issues[0].line, "verify", f"{detail} (image {image.name} left out)"))
        return
    source_ids = boxes[:, 0].astype(int)
    keep = np.array([mapping[c] is not None for c in source_ids], dtype=bool)
    scan.kept_boxes.update(scan.names[c] for c in source_ids[keep])
    scan.dropped_boxes.update(scan.names[c] for c in source_ids[~keep])
    kept = boxes[keep].copy()
    kept[:, 0] = [mapping[c] for c in source_ids[keep]]
    rel = image.relative_to(scan.root).as_posix()
    target: int | None = None
    if len(kept):
        target, mixed = _image_target(kept, recipe.mixed)
        scan.mixed += int(mixed)
        if target is None:
            present = ", ".join(recipe.classes[c] for c in sorted(set(kept[:, 0].astype(int))))
            scan.drops.append(Drop(src.id, str(image), 0, "mixed",
                                   f"boxes of several target classes ({present}) and mixed: skip"))
            return
    dropped = tuple(sorted({scan.names[c] for c in source_ids[~keep]}))
    scan.candidates.append(Candidate(source=src.id, source_index=index, path=image, rel=rel, boxes=kept,
                                     target=target, hash=digest, source_split=split, dropped=dropped))
