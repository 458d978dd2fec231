"""Image and label paths as plain strings, with `pathlib`'s rules for suffixes and ordering.

The data stage holds one path per image from listing to writing. A `pathlib.Path` keeps its
text, its parts and their case-folded copies (about 700 bytes for a short path); a `str` is
its text alone (about 100), which is what lets a build of 100,000 images stay within a few
hundred bytes per image. The functions here give the same answers `Path` gives for the
normalised absolute paths the readers produce (`str(Path(...))`), so moving from one to the
other changes no file name, pairing or order.
"""

from __future__ import annotations

import os
from itertools import pairwise

IMAGES_FOLDER, LABELS_FOLDER, LABEL_SUFFIX = "images", "labels", ".txt"
IGNORE_FOLDER = "ignore"  # ignore regions (see `mhyolo.data.spec`): label lines whose area trains neither way


def suffix(path: str) -> str:
    """`Path(path).suffix`: the last dot and what follows it in the name, unless the name starts or
    ends with that dot."""
    name = os.path.basename(path)
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def label_file_for(image: str) -> str:
    """YOLO convention: the last `images` folder in the path becomes `labels`, suffix `.txt`
    (the string form of `mhyolo.data.spec.label_path_for`)."""
    return sidecar_file_for(image, LABELS_FOLDER)


def ignore_file_for(image: str) -> str | None:
    """Where an image's ignore regions are: its label path with `ignore` for the last `images` folder;
    None for an image in no `images` folder (its label file lies beside it, and so would this one)."""
    if IMAGES_FOLDER not in image.split(os.sep)[:-1]:
        return None
    return sidecar_file_for(image, IGNORE_FOLDER)


def sidecar_file_for(image: str, folder: str) -> str:
    """The last `images` folder in the path becomes `folder`, the suffix `.txt`."""
    parts = image.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == IMAGES_FOLDER:
            parts[i] = folder
            break
    name = parts[-1]
    parts[-1] = name[:len(name) - len(suffix(name))] + LABEL_SUFFIX
    return os.sep.join(parts)


def path_order(path: str) -> str:
    """Sort key that orders paths as `Path` does, part by part: the separator sorts before every
    character a name can hold, so `a/b/x.jpg` comes before `a/b-c/x.jpg` and `a/im/x.jpg` before
    `a/im.jpg`, as their parts do (plain string order puts them the other way round)."""
    return os.path.normcase(path).replace(os.sep, "\0")


def sort_paths(paths: list[str]) -> None:
    """Sort `paths` in place by `path_order`. A plain sort gives that order unless a name holds a
    character that sorts before the separator (`.`, `-`, space) where two paths part; checking
    neighbours finds that, and only then are the keys (a second string per path) made."""
    paths.sort()
    if any(path_order(a) > path_order(b) for a, b in pairwise(paths)):
        paths.sort(key=path_order)
