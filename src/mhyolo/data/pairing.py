"""The files of a split: every image its entries name, the label file of each, and what cannot be paired.

One reading for every reader (verify, build, the training dataset, calibration), so they agree
on which images a split holds:

* a folder is read recursively, hidden files and folders skipped, as YOLOv5 and ultralytics
  glob it (`folder/**/*.*`);
* a `.txt` list holds one image path a line; a line starting with `./` is relative to the list's
  folder (as in YOLOv5 and ultralytics), any other relative line to the dataset root (they take
  it from the working directory, which is the root when run from there); blank lines and `#`
  comments are skipped. A line naming a missing file or a non-image is reported with its line;
* an image reached twice (two entries, a link and its target) is read once.

YOLO pairs an image with a label by path alone: the last `images` folder becomes `labels` and the
suffix `.txt`. Two images that differ only in suffix (`x.jpg`, `x.png`) get one label file, which
fits at most one of them and does not say which; YOLOv5 gives it to both. Here neither is used:
both are reported by name, with the label they share, and left out (verify and build) or refused
(training). Rename or remove all but one.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

from mhyolo.data.pathstr import label_file_for, path_order, sort_paths, suffix
from mhyolo.data.spec import FOLDER, IMAGE, IMAGE_SUFFIXES, LIST, MISSING, DataSpec, SplitEntry, label_path_for
from mhyolo.errors import DataError

# Issue kinds: an entry or list line naming nothing, a list line naming a non-image, one label for several images.
MISSING_KIND, NOT_IMAGE, SAME_STEM = "missing", "not-image", "same-stem"
_SHOWN = 10  # issues spelled out in an error message


class Resolver:
    """Resolved paths (links followed) as strings, each folder resolved once: a file then costs one
    lstat instead of one per component of its path, which adds up over 100,000 images. Short-lived
    (one split read): a link changed meanwhile is not seen."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def folder(self, path: str | Path) -> str:
        key = os.fspath(path)
        found = self._folders.get(key)
        if found is None:
            found = self._folders[key] = os.path.realpath(key)
        return found

    def __call__(self, path: str | Path) -> str:
        text = os.fspath(path)
        head, name = os.path.split(text)
        if name in ("", os.curdir, os.pardir):
            return os.path.realpath(text)
        full = os.path.join(self.folder(head or os.curdir), name)
        if os.path.islink(full):
            return os.path.realpath(full)
        return text if full == text else full  # the same string when nothing is linked: no second copy


@dataclass(frozen=True, slots=True)
class Pair:
    """An image and the label file YOLO reads for it (which may not exist: a negative)."""

    image: str
    label: str


@dataclass(frozen=True)
class SplitIssue:
    """Something in a split that cannot be used as it is, named by file and line (0: the whole file)."""

    kind: str  # missing | not-image | same-stem
    file: str  # the file to fix: data.yaml, a list file, or the label two images share
    line: int
    reason: str
    images: tuple[str, ...] = ()  # images left out because of it (same-stem)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


@dataclass
class SplitFiles:
    """One split read: its usable images (sorted as paths), issues, and its folders.

    Images are plain strings and each label is derived from its image when asked (`pairs`): a
    split of 100,000 images holds 100,000 short strings, not 200,000 `Path` objects.
    """

    yaml_path: Path
    split: str
    images: list[str] = field(default_factory=list)
    issues: list[SplitIssue] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # folder entries, for the orphan-label check
    resolve: Resolver = field(default_factory=Resolver, repr=False, compare=False)
    # Label files in the split's folders that no image of the split refers to (lists pick images on
    # purpose, so only folder entries are checked); None unless read with `split_files(..., orphans=True)`.
    orphans: list[str] | None = None

    def pairs(self) -> Iterator[Pair]:
        """Each image with its label file, in image order."""
        return (Pair(image, label_file_for(image)) for image in self.images)

    def find_orphans(self, known: AbstractSet[str]) -> None:
        """Set `orphans`, given the resolved label of every image listed (pairing has them at hand:
        looking them up again would make a second string per image)."""
        found: dict[str, str] = {}
        for folder in self.folders:
            for label in orphan_labels(folder, known, self.resolve):
                found.setdefault(self.resolve(label), label)
        self.orphans = sorted(found.values(), key=path_order)

    def checked(self) -> SplitFiles:
        """Self, or a DataError listing every issue (for readers that must not skip anything)."""
        if self.issues:
            shown = "\n".join(f"  {issue}" for issue in self.issues[:_SHOWN])
            more = f"\n  ... and {len(self.issues) - _SHOWN} more" if len(self.issues) > _SHOWN else ""
            raise DataError(f"{self.yaml_path}: split '{self.split}' has {len(self.issues)} problem(s); fix them or run "
                            f"`mhyolo data verify`:\n{shown}{more}")
        return self


def _image_files(folder: str) -> Iterator[str]:
    """Image files under `folder`, recursively (links followed, hidden names skipped), as found."""
    for path in glob.iglob(glob.escape(folder) + "/**/*", recursive=True):
        if suffix(path).lower() in IMAGE_SUFFIXES and os.path.isfile(path):
            yield path


def image_files(folder: Path) -> list[str]:
    """Image files under `folder`, recursively (links followed, hidden names skipped), sorted as paths."""
    images = list(_image_files(str(folder)))
    sort_paths(images)
    return images


def list_images(folder: Path) -> list[Path]:
    """`image_files` as `Path` objects, for callers that handle a few images."""
    return [Path(image) for image in image_files(folder)]


def _list_file_images(entry: SplitEntry, root: Path) -> tuple[list[str], list[SplitIssue]]:
    """Images named by a `.txt` list, and one issue per line that names no image."""
    images: list[str] = []
    issues: list[SplitIssue] = []
    try:
        lines = entry.path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{entry.path}: cannot read the '{entry.key}' list ({entry.where}): {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        base = entry.path.parent if text.startswith("./") else root
        path = Path(text) if Path(text).is_absolute() else base / text
        path = Path(*path.parts)  # drops the `./`
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            issues.append(SplitIssue(NOT_IMAGE, str(entry.path), number,
                                     f"'{text}' is not an image ({', '.join(IMAGE_SUFFIXES)})"))
        elif not path.is_file():
            issues.append(SplitIssue(MISSING_KIND, str(entry.path), number, f"image {path} does not exist"))
        else:
            images.append(str(path))
    return images, issues


def pair_images(images: list[str], resolve: Resolver | None = None
                ) -> tuple[list[str], list[SplitIssue], AbstractSet[str]]:
    """The images that can be used, sorted as paths; images that share an existing label file are left
    out, as one issue; and the resolved label files of all of them.

    An image listed twice (also through a link) is kept once. Comparisons use resolved paths, so a
    linked folder and its target pair the same way. Each resolved label keeps the first image that
    uses it; a list is made only for a label that a second image uses, which is rare.
    """
    resolve = resolve or Resolver()
    first: dict[str, str] = {}  # resolved label -> the first image using it
    shared: dict[str, list[str]] = {}  # resolved label -> its distinct images, where a second one uses it
    for image in images:
        label = resolve(label_file_for(image))
        other = first.get(label)
        if other is None:
            first[label] = image
            continue
        group = shared.setdefault(label, [other])
        real = resolve(image)
        if all(resolve(member) != real for member in group):
            group.append(image)
    kept: list[str] = []
    issues: list[SplitIssue] = []
    for label, image in first.items():
        group = shared.get(label, [image])
        if len(group) == 1 or not os.path.isfile(label_file_for(group[0])):
            kept.extend(group)  # one image per label, or negatives that share no label
            continue
        unused = "neither is used" if len(group) == 2 else "none of them is used"
        issues.append(SplitIssue(SAME_STEM, label_file_for(group[0]), 0,
                                 f"one label file for {len(group)} images with one stem ({', '.join(group)}): "
                                 f"it fits at most one and does not say which; {unused} (keep one image per stem)",
                                 images=tuple(group)))
    sort_paths(kept)
    issues.sort(key=lambda i: i.file)
    return kept, issues, first.keys()


def split_files(spec: DataSpec, split: str, orphans: bool = False) -> SplitFiles:
    """Read every entry of `split` and pair its images with their labels; with `orphans`, also find
    the label files no image refers to."""
    result = SplitFiles(yaml_path=spec.yaml_path, split=split)
    images: list[str] = []
    for entry in spec.entries(split):
        if entry.kind == FOLDER:
            result.folders.append(entry.path)
            images += image_files(entry.path)
        elif entry.kind == LIST:
            listed, issues = _list_file_images(entry, spec.root)
            images += listed
            result.issues += issues
        elif entry.kind == IMAGE:
            images.append(str(entry.path))
        elif entry.kind == MISSING:
            result.issues.append(SplitIssue(MISSING_KIND, str(entry.yaml_path), entry.line, entry.missing_reason()))
    result.images, clashes, labels = pair_images(images, result.resolve)
    result.issues += clashes
    if orphans:
        result.find_orphans(labels)
    return result


def split_images(spec: DataSpec, split: str) -> list[Path]:
    """Images of a split that have an unambiguous label; any problem with the split is a DataError."""
    return [Path(image) for image in split_files(spec, split).checked().images]


def orphan_labels(images_dir: Path, known: AbstractSet[str], resolve: Resolver | None = None) -> list[str]:
    """Label files for images under `images_dir` whose resolved path is not in `known`, sorted as paths.

    Labels live in the matching `labels` folder, or beside the images where there is none; beside
    images, only folders holding images are looked at (a README.txt elsewhere is no label).
    """
    resolve = resolve or Resolver()
    if not images_dir.is_dir():
        return []
    labels_dir = label_path_for(images_dir / "probe.jpg").parent
    beside = not labels_dir.is_dir() or labels_dir.resolve() == images_dir.resolve()
    top = images_dir if beside else labels_dir
    with_images = {resolve.folder(os.path.dirname(p)) for p in _image_files(str(images_dir))} if beside else None
    found: list[str] = []
    for label in glob.iglob(glob.escape(str(top)) + "/**/*.txt", recursive=True):
        if with_images is not None and resolve.folder(os.path.dirname(label)) not in with_images:
            continue
        if os.path.basename(label) != "classes.txt" and os.path.isfile(label) and resolve(label) not in known:
            found.append(label)
    return sorted(found, key=path_order)
