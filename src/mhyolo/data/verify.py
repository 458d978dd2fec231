"""Checks that a YOLO dataset can be trusted: images decode, labels parse, pairs match, no leaks.

The same checks guard a build (a bad source file is reported and left out) and
run on their own (`mhyolo data verify DATA.yaml`). Images are decoded fully with
Pillow because OpenCV decodes a truncated JPEG without complaint; the decode is
done at a reduced scale (JPEG draft mode), which still reads every byte, and the
small image it yields is what the near-duplicate hash is computed from
(`mhyolo.data.hashing`, over the machine's cores; no stored hash is trusted here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mhyolo.data.dedup import DEFAULT_METHOD, packed_cross_pairs
from mhyolo.data.hashing import check_images
from mhyolo.data.labels import read_labels
from mhyolo.data.pairing import SAME_STEM, split_files
from mhyolo.data.spec import load_data_spec
from mhyolo.data.stages import Stages
from mhyolo.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, named by file and line (0 = the whole file)."""

    kind: str  # image | label | orphan-label | missing | not-image | same-stem | shared-folder | shared-image | leak
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


@dataclass
class SplitSummary:
    """Counts for one split of a verified dataset (bad files are counted, not included)."""

    folder: str  # the split's entries
    images: int = 0  # images that decode and whose labels parse
    negatives: int = 0  # of those, images with no box
    boxes: int = 0
    class_boxes: dict[str, int] = field(default_factory=dict)
    bad_images: int = 0
    bad_labels: int = 0  # label files with at least one bad line
    orphan_labels: int = 0
    same_stem: int = 0  # images left out because another image shares their label file
    missing: int = 0  # entries or list lines that name no image


@dataclass
class VerifyReport:
    """Result of `verify_dataset`: per-split counts, every problem, and cross-split near-duplicates."""

    data_yaml: str
    names: list[str]
    splits: dict[str, SplitSummary]
    problems: list[Problem]
    leak_threshold: int | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_yaml": self.data_yaml,
            "names": self.names,
            "ok": self.ok,
            "leak_threshold": self.leak_threshold,
            "splits": {k: asdict(v) for k, v in self.splits.items()},
            "problems": [asdict(p) for p in self.problems],
        }


def verify_dataset(data_yaml: str | Path, leak_threshold: int | None = 6, hash_method: str = DEFAULT_METHOD,
                   hash_size: int = 8, progress: bool = True, workers: int | None = None,
                   stages: Stages | None = None) -> VerifyReport:
    """Check every split of a dataset; `leak_threshold=None` skips the near-duplicate check across splits.

    Images are decoded over `workers` processes (None: every core).
    """
    if leak_threshold is not None and not 0 <= leak_threshold < hash_size ** 2:
        raise ConfigError(f"leak threshold {leak_threshold}: must be in 0..{hash_size ** 2 - 1} for a "
                          f"{hash_size ** 2}-bit hash (hash_size {hash_size})")
    stages = stages or Stages()
    with stages("scan"):
        spec = load_data_spec(data_yaml)
    problems: list[Problem] = []
    summaries: dict[str, SplitSummary] = {}
    hashes: dict[str, tuple[list[str], np.ndarray]] = {}  # split -> images to compare, their packed hashes
    entries_seen: dict[tuple[Path, ...], str] = {}
    split_of_image: dict[str, str] = {}  # resolved image -> first split holding it
    for split in spec.splits:
        with stages("scan"):
            summary = summaries[split] = SplitSummary(folder=spec.describe(split))
            same = tuple(sorted(e.path.resolve() for e in spec.entries(split)))
            if same in entries_seen:
                problems.append(Problem("shared-folder", spec.describe(split), 0,
                                        f"splits '{entries_seen[same]}' and '{split}' use the same images folder"))
                summaries[split] = replace(summaries[entries_seen[same]])  # same files, same counts
                continue
            entries_seen[same] = split
            files = split_files(spec, split, orphans=True)
            for issue in files.issues:
                problems.append(Problem(issue.kind, issue.file, issue.line, issue.reason))
                if issue.kind == SAME_STEM:
                    summary.same_stem += len(issue.images)
                else:
                    summary.missing += 1
            also: dict[str, list[str]] = {}
            # the image is not in an earlier split (those are reported, not compared)
            first_here = np.zeros(len(files.images), dtype=bool)
            for i, image in enumerate(files.images):
                first = split_of_image.setdefault(files.resolve(image), split)
                first_here[i] = first == split
                if first != split:
                    also.setdefault(first, []).append(image)
            for other, shared in also.items():
                more = f" and {len(shared) - 1} more" if len(shared) > 1 else ""
                problems.append(Problem("shared-image", shared[0], 0, f"also in split '{other}'{more}"))
        with stages("hash"):
            checked = check_images(files.images, None if leak_threshold is None else hash_method,
                                   hash_size, workers=workers, progress=progress, desc=f"verify {split}")
        with stages("scan"):
            usable = np.zeros(len(files.images), dtype=bool)  # decodes and its labels parse
            for k, pair in enumerate(tqdm(files.pairs(), total=len(files.images), desc=f"labels {split}", unit="img",
                                          disable=not progress, leave=False)):
                error = checked.errors.get(k)
                if error:
                    summary.bad_images += 1
                    problems.append(Problem("image", pair.image, 0, error))
                    continue
                boxes, issues = read_labels(pair.label, nc=spec.nc)
                if issues:
                    summary.bad_labels += 1
                    problems.extend(Problem("label", str(i.path), i.line, i.reason) for i in issues)
                    continue
                summary.images += 1
                summary.boxes += len(boxes)
                summary.negatives += int(len(boxes) == 0)
                for cls in boxes[:, 0].astype(int):
                    summary.class_boxes[spec.names[cls]] = summary.class_boxes.get(spec.names[cls], 0) + 1
                usable[k] = True
            compared = usable & first_here & checked.hashed()  # images shared with an earlier split are reported above
            hashes[split] = ([image for image, keep in zip(files.images, compared) if keep], checked.packed[compared])
            for label in files.orphans or []:
                summary.orphan_labels += 1
                problems.append(Problem("orphan-label", label, 0, "label file without an image"))
    if leak_threshold is not None:
        with stages("dedup"):
            problems.extend(_leaks(hashes, leak_threshold, hash_size * hash_size))
    return VerifyReport(data_yaml=str(spec.yaml_path), names=spec.names, splits=summaries, problems=problems,
                        leak_threshold=leak_threshold)


def _leaks(hashes: dict[str, tuple[list[str], np.ndarray]], threshold: int, bits: int) -> list[Problem]:
    """One problem per image that has a near-duplicate in an earlier split, naming the closest one."""
    found: list[Problem] = []
    splits = list(hashes)
    for i, first in enumerate(splits):
        for second in splits[i + 1:]:
            (a, packed_a), (b, packed_b) = hashes[first], hashes[second]
            if not a or not b:
                continue
            matches: dict[int, list[tuple[int, int]]] = {}
            for ia, ib, dist in packed_cross_pairs(packed_a, packed_b, bits, threshold):
                matches.setdefault(ib, []).append((dist, ia))
            for ib in sorted(matches):
                dist, ia = min(matches[ib])
                more = f" and {len(matches[ib]) - 1} more" if len(matches[ib]) > 1 else ""
                found.append(Problem("leak", b[ib], 0, f"near-duplicate of {first} image {a[ia]} "
                                                      f"(distance {dist}){more}"))
    return found
