"""The target images: a folder as it is, or a video sampled into frames; and which of them are
near-duplicates (of an earlier target, or of a labelled image) and so are not pseudo-labelled.

Frames are written once as JPEG files (`frames/`, with `done.json`): a YOLO dataset, a labelling
tool and the training loader all need files, and a re-run must not decode the video again.
Near-duplicates are found with the data stage's perceptual hash (`data.hashing`, `data.dedup`):
a video holds runs of almost identical frames, which would weigh one moment many times over, and
an image that is already labelled (a corrected pseudo folder given back with `--labelled`) needs no
pseudo-label, nor may a copy of a labelled validation image train the student.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mhyolo.data.dedup import DEFAULT_METHOD, packed_cross_pairs, packed_near_pairs
from mhyolo.data.hashing import check_images
from mhyolo.errors import DataError, MhyoloError
from mhyolo.infer.sources import ImageSource, VideoSource, open_source

HASH_SIZE = 8  # 64-bit hashes, as the data stage's default
FRAME_QUALITY = 95  # JPEG quality of sampled frames


@dataclass(frozen=True)
class Target:
    """One target image; `frame` is its frame number when it was sampled from a video."""

    path: str
    frame: int | None = None


def check_source(images: str | Path) -> ImageSource | VideoSource:
    """The target folder or video, refused by name before anything is written: no images, a
    video that cannot be opened or gives no frame."""
    source = open_source(images)
    if isinstance(source, VideoSource):
        capture = cv2.VideoCapture(str(source.path))
        try:
            ok, _ = capture.read()
        finally:
            capture.release()
        if not ok:
            raise DataError(f"{source.path}: the video opens but no frame can be read from it")
    return source


def image_targets(source: ImageSource) -> list[Target]:
    return [Target(str(path)) for path in source.files]


def sample_video(source: VideoSource, fps: float, folder: Path, progress: bool = True) -> list[Target]:
    """Frames at `fps` (every frame when the video has fewer) as `folder/<video>_<frame>.jpg`; a
    folder with `done.json` is read back instead."""
    done = folder / "done.json"
    if done.is_file():
        return [Target(**item) for item in json.loads(done.read_text())["targets"]]
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1.0, source.fps / fps)  # frames between samples
    targets: list[Target] = []
    next_pick = 0.0
    bar = tqdm(total=len(source) or None, desc="frames", unit="frame", disable=not progress, leave=False)
    with bar:
        for frame in source:
            bar.update(1)
            assert frame.index is not None and frame.image is not None
            if frame.index + 1e-9 < next_pick:
                continue
            next_pick += step
            path = folder / f"{source.path.stem}_{frame.index:06d}.jpg"
            if not cv2.imwrite(str(path), frame.image, [cv2.IMWRITE_JPEG_QUALITY, FRAME_QUALITY]):
                raise MhyoloError(f"{path}: cannot write a sampled frame")
            targets.append(Target(str(path), frame.index))
    if not targets:
        raise DataError(f"{source.path}: no frame could be read from the video")
    done.write_text(json.dumps({"video": str(source.path), "fps": fps, "video_fps": source.fps,
                                "targets": [asdict(t) for t in targets]}, indent=1))
    return targets


@dataclass
class Duplicates:
    """Targets left out: index -> the image each one nearly repeats."""

    of_target: dict[int, str]  # an earlier target
    of_labelled: dict[int, str]  # a labelled image

    def dropped(self) -> set[int]:
        return set(self.of_target) | set(self.of_labelled)


def find_duplicates(targets: list[str], labelled: list[str], bits: int, progress: bool = True,
                    workers: int | None = None) -> Duplicates:
    """A target within `bits` of a labelled image, or of an earlier target that is kept, is a
    duplicate (the first of a run of near-identical frames stays). Images that do not decode are
    never duplicates (the teacher pass reports them)."""
    checked = check_images([*targets, *labelled], DEFAULT_METHOD, HASH_SIZE, workers=workers,
                           progress=progress, desc="hash")
    hashed = checked.hashed()
    n_bits = HASH_SIZE * HASH_SIZE
    target_rows = np.flatnonzero(hashed[:len(targets)])
    labelled_rows = len(targets) + np.flatnonzero(hashed[len(targets):])
    out = Duplicates({}, {})
    for i, j, _ in packed_cross_pairs(checked.packed[target_rows], checked.packed[labelled_rows], n_bits, bits):
        out.of_labelled.setdefault(int(target_rows[i]), labelled[int(labelled_rows[j]) - len(targets)])
    earlier: dict[int, list[int]] = {}
    for i, j, _ in packed_near_pairs(checked.packed[target_rows], n_bits, bits):
        a, b = sorted((int(target_rows[i]), int(target_rows[j])))
        earlier.setdefault(b, []).append(a)
    for index in sorted(earlier):
        if index in out.of_labelled:
            continue
        kept = [a for a in sorted(earlier[index]) if a not in out.of_target and a not in out.of_labelled]
        if kept:
            out.of_target[index] = targets[kept[0]]
    return out
