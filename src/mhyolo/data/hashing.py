"""Decoding and hashing many images over the machine's cores, results in input order.

Decoding is what a build and a verify spend their time on (a full Pillow decode checks each
file, and its thumbnail gives the perceptual hash), and each image is independent, so the
files are cut into chunks handed to worker processes. The results come back in the order
of the input whatever the number of workers, so a build is the same on one core or sixteen.
Few images (under two chunks) or one worker are done in this process: starting workers
costs more than it saves there.

Workers start from a clean server process (forkserver; spawn where there is none), not as
copies of a caller that may hold threads and a model. Like any such pool, it re-imports the
calling script, so a script that builds or verifies must keep its work under
`if __name__ == "__main__":` (or set one worker).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mhyolo.data.dedup import image_hash, pack_hashes, unpack_hashes
from mhyolo.errors import ConfigError, DataError

# Longest side of the decoded thumbnail; JPEG draft mode picks a scale >= this.
THUMB_SIZE = 64
# (hash or None, reason the image is unusable or None) per image; the hash is None when not asked for.
Checked = tuple[np.ndarray | None, str | None]
MIN_CHUNK, MAX_CHUNK = 64, 256  # images per task


def decode_image(path: Path, thumb: int = THUMB_SIZE) -> tuple[Image.Image | None, str | None]:
    """Decode `path` completely; return a small grayscale copy, or the reason it cannot be used."""
    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums (PNG CRCs); the handle is unusable afterwards
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("L", (thumb, thumb))
            img.load()  # raises on truncated data
            small = img.convert("L")
    except Exception as exc:  # Pillow raises many types for broken files
        return None, f"image does not decode: {exc}"
    small.thumbnail((thumb, thumb))
    return small, None


def check_image(path: Path, method: str | None, hash_size: int) -> Checked:
    """Decode `path` and, with a `method`, hash its thumbnail."""
    small, error = decode_image(path)
    if small is None or method is None:
        return None, error
    return image_hash(small, method, hash_size), None


class Decoded(Sequence[Checked]):
    """What `check_images` found, compactly: one row of packed hash bits per image and the reasons
    of the images that fail, instead of a tuple and an array object per image (about 250 bytes
    each, 100,000 times over). Item `i` is image i's `Checked` pair, made when asked for."""

    def __init__(self, count: int, bits: int | None) -> None:
        self.bits = bits  # bits of each hash; None: decoded, not hashed
        self.packed = np.zeros((count, -(-bits // 8) if bits else 0), dtype=np.uint8)
        self.errors: dict[int, str] = {}  # image index -> why it cannot be used

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, index: int) -> Checked:  # type: ignore[override]  # one image, no slices
        index = range(len(self))[index]
        error = self.errors.get(index)
        if error is not None or self.bits is None:
            return None, error
        return unpack_hashes(self.packed[index], self.bits), None

    def hashed(self) -> np.ndarray:
        """Which images have a hash: they decode, and a hash was asked for."""
        ok = np.full(len(self), self.bits is not None)
        ok[list(self.errors)] = False
        return ok

    def put(self, start: int, part: Decoded) -> None:
        """Take the results of images start.. from `part` (a chunk done by a worker)."""
        self.packed[start:start + len(part)] = part.packed
        self.errors.update((start + i, error) for i, error in part.errors.items())


def _check_chunk(paths: list[Path], method: str | None, hash_size: int) -> Decoded:
    result = Decoded(len(paths), hash_size * hash_size if method else None)
    for i, path in enumerate(paths):
        digest, error = check_image(path, method, hash_size)
        if error is not None:
            result.errors[i] = error
        elif digest is not None:
            result.packed[i] = pack_hashes(digest)
    return result


def resolve_workers(workers: int | None) -> int:
    """Worker processes to use: `workers`, or every core when None."""
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive number of processes (or null for every core), got {workers!r}")
    return workers


def _context() -> multiprocessing.context.BaseContext:
    """forkserver (its server imports this module once), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def check_images(paths: Sequence[str | Path], method: str | None, hash_size: int = 8, workers: int | None = None,
                 progress: bool = True, desc: str = "hash", chunk: int | None = None) -> Decoded:
    """`check_image` for every path, in order, over `workers` processes (None: every core).

    `chunk`: images per task (default: enough tasks for an even load and a moving progress bar).
    """
    workers = resolve_workers(workers)
    chunk = chunk or max(MIN_CHUNK, min(MAX_CHUNK, len(paths) // (workers * 16)))
    starts = range(0, len(paths), chunk)
    result = Decoded(len(paths), hash_size * hash_size if method else None)
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    with bar:
        if workers == 1 or len(starts) < 2:
            for start in starts:
                result.put(start, _check_chunk(list(paths[start:start + chunk]), method, hash_size))
                bar.update(min(chunk, len(paths) - start))
            return result
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(starts)), mp_context=_context()) as pool:
                futures = {pool.submit(_check_chunk, list(paths[start:start + chunk]), method, hash_size): start
                           for start in starts}
                for future in as_completed(futures):
                    part = future.result()
                    result.put(futures[future], part)
                    bar.update(len(part))
        except BrokenProcessPool as exc:
            raise DataError(f"a worker process decoding images stopped ({exc}); from a script, keep its work under "
                            "`if __name__ == \"__main__\":`, or use one worker (scan.workers: 1, --workers 1)") from exc
        return result
