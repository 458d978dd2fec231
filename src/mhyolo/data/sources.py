"""Reading one YOLO-format source for a build: verify, remap classes, hash.

A source is a folder with a `data.yaml` and `images/` + `labels/`, flat or split
into train/valid/test as Roboflow and ultralytics export them. Every image is
decoded once: that checks it and gives the thumbnail for the near-duplicate
hash. The decoding runs over the machine's cores (`mhyolo.data.hashing`), and an
image whose file is unchanged since an earlier build takes its hash from the
hash cache (`mhyolo.data.hash_cache`) instead. Boxes of source classes mapped to
a target class are kept (renumbered); boxes of classes mapped to null are dropped
and counted. Nothing leaves the scan without a `Drop` record saying why.

A build keeps one `Candidate` per image from here to the writing, so its fields are
compact: paths as strings, boxes and the hash as bytes (a few hundred bytes an image).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mhyolo.data.hash_cache import HashStore, file_stamps
from mhyolo.data.hashing import THUMB_SIZE, check_images
from mhyolo.data.labels import boxes_from_bytes, boxes_to_bytes, read_labels
from mhyolo.data.pairing import SAME_STEM, SplitFiles, split_files
from mhyolo.data.pathstr import label_file_for
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
    path: str  # as listed (links kept)
    rel_start: int  # where `rel` starts in `path`; -1 for a path that leaves the source folder (a link)
    packed_boxes: bytes  # `boxes` as float32 bytes
    target: int | None  # target class for sampling; None: a negative
    hash: bytes  # perceptual hash, packed bits (`mhyolo.data.dedup.pack_hashes`)
    source_split: str  # data.yaml split key the image came from
    dropped: tuple[str, ...] = ()  # source class names whose boxes were dropped from this image
    group: int = -1  # near-duplicate group, set by `mhyolo.data.select.group_candidates`
    split: str = ""  # the output split, set by `mhyolo.data.select.split_by_groups`
    outside_rel: str = ""  # `rel` of a path that leaves the source folder

    @property
    def rel(self) -> str:
        """The path inside the source folder, for reports and stable ordering: cut from `path` when
        asked rather than kept as a second string per image."""
        if self.rel_start < 0:
            return self.outside_rel
        rel = self.path[self.rel_start:]
        return rel if os.sep == "/" else rel.replace(os.sep, "/")

    @property
    def boxes(self) -> np.ndarray:
        """(n, 5) [target_cls, cx, cy, w, h], read-only."""
        return boxes_from_bytes(self.packed_boxes)


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
        result.append(split_files(spec, split, orphans=True))
    return spec.names, result


# Decoded-image results of one build, keyed by resolved file: the packed hash, or why the image is unusable.
HashCache = dict[str, bytes | str]


def hash_source(recipe: Recipe, root: Path, keys: list[str], images: list[str], cache: HashCache,
                progress: bool = True, desc: str = "hash") -> None:
    """Put the packed hash, or the reason it is unusable, of every image into `cache` under its
    resolved path `keys[i]` (`images[i]`: the path it is read by): from `cache` itself, from the
    hash cache of an earlier build where the file is unchanged, else by decoding it over
    `recipe.scan.workers` processes."""
    dedup = recipe.dedup
    todo = np.flatnonzero(np.fromiter((key not in cache for key in keys), dtype=bool, count=len(keys)))
    store = HashStore(root, dedup.method, dedup.hash_size, THUMB_SIZE) if recipe.scan.cache else None
    stamps = file_stamps(keys) if store else np.zeros((0, 3), np.int64)
    if store and len(todo):
        found, packed = store.lookup([keys[i] for i in todo], stamps[todo])
        for i, row in zip(todo[found], packed[found]):
            cache[keys[i]] = row.tobytes()
        todo = todo[~found]
    decoded = check_images([images[i] for i in todo], dedup.method, dedup.hash_size, workers=recipe.scan.workers,
                           progress=progress, desc=desc)
    hashed = decoded.hashed()
    for k, i in enumerate(todo.tolist()):
        cache[keys[i]] = decoded.packed[k].tobytes() if hashed[k] else decoded.errors.get(k, "image does not decode")
    if store:
        packed = np.zeros((len(keys), store.width), np.uint8)
        usable = np.zeros(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            value = cache[key]
            if isinstance(value, bytes):
                packed[i] = np.frombuffer(value, dtype=np.uint8)
                usable[i] = True
        store.save(keys, stamps, packed, usable)


def _list_source(scan: SourceScan, splits: list[SplitFiles]
                 ) -> tuple[list[tuple[str, list[Drop], list[str], list[str]]], dict[str, str]]:
    """Per split: the drops listing found, and the resolved paths and paths of the images to read;
    plus every image to read once (resolved path -> path). Plain strings only: the split files
    are let go before the images are read."""
    seen_labels: set[str] = set()  # resolved orphan labels: a file in several splits counts in the first
    seen_issues: set[tuple[str, str, int]] = set()
    to_read: dict[str, str] = {}  # resolved -> as listed, every image to read
    listed: list[tuple[str, list[Drop], list[str], list[str]]] = []
    for files in splits:
        drops: list[Drop] = []
        for issue in files.issues:  # list lines naming no image, and images that share one label file
            if (issue.kind, issue.file, issue.line) in seen_issues:
                continue
            seen_issues.add((issue.kind, issue.file, issue.line))
            if issue.kind == SAME_STEM:
                scan.images_seen += len(issue.images)
                drops += [Drop(scan.source, image, 0, SAME_STEM, issue.reason) for image in issue.images]
            else:
                scan.images_seen += 1
                drops.append(Drop(scan.source, issue.file, issue.line, "verify", issue.reason))
        for label in files.orphans or []:
            key = files.resolve(label)
            if key not in seen_labels and key not in to_read:
                seen_labels.add(key)
                drops.append(Drop(scan.source, label, 0, "orphan-label", "label file without an image"))
        keys: list[str] = []
        images: list[str] = []
        for image in files.images:  # an image in an earlier split counts there
            key = files.resolve(image)
            if key not in to_read and key not in seen_labels:
                keys.append(key)
                images.append(image)
        for key, image in zip(keys, images):
            to_read.setdefault(key, image)
        scan.images_seen += len(keys)
        listed.append((files.split, drops, keys, images))
    return listed, to_read


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
        listed, to_read = _list_source(scan, splits)
        del splits
    with stages("hash"):
        hash_source(recipe, base, list(to_read), list(to_read.values()), cache, progress, desc=f"hash {src.id}")
        del to_read
    with stages("scan"):
        for split, drops, keys, images in listed:
            scan.drops += drops
            for key, image in tqdm(zip(keys, images), total=len(keys), desc=f"scan {src.id}/{split}", unit="img",
                                   disable=not progress, leave=False):
                _scan_image(recipe, image, split, index, mapping, scan, cache[key])
    return scan


def _relative(path: str, root: Path) -> tuple[int, str]:
    """Where the part of `path` inside `root` starts, or -1 and that part found through resolved
    paths when a link leads out (`Candidate.rel`)."""
    prefix = os.path.join(root, "")
    if path.startswith(prefix):
        return len(prefix), ""
    real, real_root = Path(path).resolve(), root.resolve()
    if real.is_relative_to(real_root):
        return -1, real.relative_to(real_root).as_posix()
    return -1, Path(os.path.relpath(real, real_root)).as_posix()


def _scan_image(recipe: Recipe, image: str, split: str, index: int, mapping: list[int | None], scan: SourceScan,
                found: bytes | str) -> None:
    """Read one image's labels and make it a candidate, or a drop saying why not (`found`: its packed
    hash, or why it does not decode)."""
    if isinstance(found, str):
        scan.drops.append(Drop(scan.source, image, 0, "verify", found))
        return
    label = label_file_for(image)
    boxes, issues = read_labels(label, nc=len(scan.names))
    if issues:  # one drop per image; its reason lists every bad line
        detail = "; ".join(f"line {i.line}: {i.reason}" if i.line else i.reason for i in issues)
        scan.drops.append(Drop(scan.source, label, issues[0].line, "verify",
                               f"{detail} (image {os.path.basename(image)} left out)"))
        return
    source_ids = boxes[:, 0].astype(int)
    keep = np.array([mapping[c] is not None for c in source_ids], dtype=bool)
    scan.kept_boxes.update(scan.names[c] for c in source_ids[keep])
    scan.dropped_boxes.update(scan.names[c] for c in source_ids[~keep])
    kept = boxes[keep].copy()
    kept[:, 0] = [mapping[c] for c in source_ids[keep]]
    rel_start, outside_rel = _relative(image, scan.root)
    target: int | None = None
    if len(kept):
        target, mixed = _image_target(kept, recipe.mixed)
        scan.mixed += int(mixed)
        if target is None:
            present = ", ".join(recipe.classes[c] for c in sorted(set(kept[:, 0].astype(int))))
            scan.drops.append(Drop(scan.source, image, 0, "mixed",
                                   f"boxes of several target classes ({present}) and mixed: skip"))
            return
    dropped = tuple(sorted({scan.names[c] for c in source_ids[~keep]}))
    scan.candidates.append(Candidate(source=scan.source, source_index=index, path=image, rel_start=rel_start,
                                     packed_boxes=boxes_to_bytes(kept), target=target, hash=found,
                                     source_split=split, dropped=dropped, outside_rel=outside_rel))
