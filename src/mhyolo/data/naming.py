"""The file names `mhyolo data build` gives its images, and reading a name's source back.

A built dataset (and every cross-validation fold) names each image `<class>_<source>_<n>`:
its target class (or `negative`), the recipe source it came from and a number. Training
reads the source back from the name where it needs to know which images come from the same
camera (copy-paste favours balls from another source); other datasets have no such names,
and an image's folder stands for its source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

NEGATIVE = "negative"  # the class part of the name of an image with no box

_NUMBERED = re.compile(r"^(?P<rest>.+)_\d+$")


def output_stem(cls: str, source: str, number: int, width: int) -> str:
    """The stem of a built image's name: class (or `negative`), source, zero-padded number."""
    return f"{cls}_{source}_{number:0{width}d}"


def source_of(path: str | PurePath, classes: Sequence[str]) -> str:
    """The source of an image named by `output_stem` for these classes; else its folder."""
    path = PurePath(path)
    numbered = _NUMBERED.match(path.stem)
    if numbered:
        rest = numbered.group("rest")
        for cls in sorted([*classes, NEGATIVE], key=len, reverse=True):
            if rest.startswith(f"{cls}_") and len(rest) > len(cls) + 1:
                return rest[len(cls) + 1:]
    return str(path.parent)
