"""Reading one YOLO-format source for a build: verify, remap classes, hash.

A source is a folder with a `data.yaml` and `images/` + `labels/`, flat or split
into train/valid/test as Roboflow and ultralytics export them. Every image is
decoded once: that checks it and gives the thumbnail for the near-duplicate
hash. The decoding runs over the machine's cores (`mhyolo.data.hashing`), and an
image whose file is unchanged since an earlier build takes its hash from the
hash cache (`mhyolo.data.hash_cache`) instead. Boxes of source classes mapped to
a target class are kept (renumbered); boxes of classes mapped to null are dropped
and counted. Nothing leaves the scan without a `Drop` record saying why.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mhyolo.data.hash_cache import HashStore, file_stamp
from mhyolo.data.hashing import THUMB_SIZE, Checked, check_images
from mhyolo.data.labels import read_labels
from mhyolo.data.pairing import SAME_STEM, Pair, SplitFiles, split_files
from mhyolo.data.recipe import Recipe, SourceRecipe
from mhyolo.data.spec import MISSING, load_data_spec
from mhyolo.data.stages import Stages
from mhyolo.errors import ConfigError, DataError


@dataclass(frozen=True, slots=True)
class Drop:
    """An image (or label file) left out of a build, and why."""

    source: str
    file: str  # path of the file that caused the drop
    line: int  # 1-based line for label problems, else 0
    stage: str  # orphan-label | verify | same-stem | mixed | duplicate | negatives | sample | balance
    reason: str


@dataclass(slots=True)  # one per source image: no per-instance dict
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


def source_splits(src: SourceRecipe, root: Path, where: str) -> tuple[list[str], list[SplitFiles]]:
    """Class names and the files of each split to read (a data.yaml entry naming nothing is an error)."""
    spec = load_data_spec(root)
    wanted = src.splits if src.splits is not None else list(spec.splits)
    unknown = [s for s in wanted if s not in spec.splits]
    if unknown:
        raise ConfigError(f"{where}.splits: {', '.join(unknown)} not in {spec.yaml_path} "
                          f"(has {', '.join(spec.splits) or 'none'})")
    result: list[SplitFiles] = []
    for split in dict.fromkeys(wanted):
        missing = [e for e in spec.entries(split) if e.kind == MISSING]
        if missing:
            raise DataError(f"{missing[0].where}: {missing[0].missing_reason()}")
        result.append(split_files(spec, split))
    return spec.names, result


# Decoded-image results of one build, keyed by resolved file: (hash or None, error or None).
HashCache = dict[str, Checked]


def hash_source(recipe: Recipe, root: Path, images: dict[str, Path], cache: HashCache, progress: bool = True,
                desc: str = "hash") -> None:
    """Put the (hash, error) of every image (resolved path -> the path it is read by) into `cache`:
    from `cache` itself, from the hash cache of an earlier build where the file is unchanged, else
    by decoding it over `recipe.scan.workers` processes."""
    dedup = recipe.dedup
    todo = {key: image for key, image in images.items() if key not in cache}
    store = HashStore(root, dedup.method, dedup.hash_size, THUMB_SIZE) if recipe.scan.cache else None
    stamps = {key: file_stamp(key) for key in images} if store else {}
    if store and todo:
        stored = store.load()
        for key in list(todo):
            entry = stored.get(key)
            if entry is not None and stamps[key] is not None and entry[0] == stamps[key]:
                cache[key] = (entry[1], None)
                del todo[key]
    results = check_images(list(todo.values()), dedup.method, dedup.hash_size, workers=recipe.scan.workers,
                           progress=progress, desc=desc)
    cache.update(zip(todo, results))
    if store:
        store.save({key: (stamp, cache[key][0]) for key, stamp in stamps.items()
                    if stamp is not None and cache[key][0] is not None})


def scan_source(recipe: Recipe, index: int, progress: bool = True, cache: HashCache | None = None,
                stages: Stages | None = None) -> SourceScan:
    """Verify, remap and hash every image of source `index` of `recipe`.

    `cache` keeps each file's hash for the length of a build, so a file read twice is decoded once.
    """
    cache = {} if cache is None else cache
    stages = stages or Stages()
    src = recipe.sources[index]
    where = f"sources[{index}] ({src.id})"
    root = recipe.source_path(src)
    with stages("scan"):
        if not (root / "data.yaml").is_file() and not (root.is_file() and root.suffix in (".yaml", ".yml")):
            raise DataError(f"{where}: no data.yaml in {root}")
        names, splits = source_splits(src, root, where)
        base = root if root.is_dir() else root.parent
        mapping = class_map(src, names, recipe.classes, where)
        scan = SourceScan(source=src.id, root=base, names=names)
        seen: set[str] = set()  # resolved images and labels: a file in several splits counts in the first
        seen_issues: set[tuple[str, str, int]] = set()
        # per split: the drops listing found, and the (resolved image, pair) to read
        listed: list[tuple[str, list[Drop], list[tuple[str, Pair]]]] = []
        images: dict[str, Path] = {}  # resolved -> as listed, every image to read
        for files in splits:
            drops: list[Drop] = []
            for issue in files.issues:  # list lines naming no image, and images that share one label file
                if (issue.kind, issue.file, issue.line) in seen_issues:
                    continue
                seen_issues.add((issue.kind, issue.file, issue.line))
                if issue.kind == SAME_STEM:
                    scan.images_seen += len(issue.images)
                    drops += [Drop(src.id, image, 0, SAME_STEM, issue.reason) for image in issue.images]
                else:
                    scan.images_seen += 1
                    drops.append(Drop(src.id, issue.file, issue.line, "verify", issue.reason))
            for label in files.orphan_labels():
                if files.resolve(label) not in seen:
                    seen.add(files.resolve(label))
                    drops.append(Drop(src.id, str(label), 0, "orphan-label", "label file without an image"))
            pairs = [(key, p) for key, p in ((files.resolve(p.image), p) for p in files.pairs) if key not in seen]
            seen |= {key for key, _ in pairs}
            for key, pair in pairs:
                images.setdefault(key, pair.image)
            scan.images_seen += len(pairs)
            listed.append((files.split, drops, pairs))
    with stages("hash"):
        hash_source(recipe, base, images, cache, progress, desc=f"hash {src.id}")
    with stages("scan"):
        for split, drops, pairs in listed:
            scan.drops += drops
            for key, pair in tqdm(pairs, desc=f"scan {src.id}/{split}", unit="img", disable=not progress,
                                  leave=False):
                _scan_image(recipe, src, pair, split, index, mapping, scan, cache[key])
    return scan


def _relative(path: Path, root: Path) -> str:
    """`path` inside `root` for reports and ordering; through resolved paths when a link leads out."""
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    real, real_root = path.resolve(), root.resolve()
    if real.is_relative_to(real_root):
        return real.relative_to(real_root).as_posix()
    return Path(os.path.relpath(real, real_root)).as_posix()


def _scan_image(recipe: Recipe, src: SourceRecipe, pair: Pair, split: str, index: int,
                mapping: list[int | None], scan: SourceScan, checked: Checked) -> None:
    image, label = pair.image, pair.label
    digest, error = checked
    if error or digest is None:
        scan.drops.append(Drop(src.id, str(image), 0, "verify", error or "image does not decode"))
        return
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
    rel = _relative(image, scan.root)
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
