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

from mhyolo.data.dedup import image_hash
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


def _check_chunk(paths: list[Path], method: str | None, hash_size: int) -> list[Checked]:
    return [check_image(p, method, hash_size) for p in paths]


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


def check_images(paths: Sequence[Path], method: str | None, hash_size: int = 8, workers: int | None = None,
                 progress: bool = True, desc: str = "hash", chunk: int | None = None) -> list[Checked]:
    """`check_image` for every path, in order, over `workers` processes (None: every core).

    `chunk`: images per task (default: enough tasks for an even load and a moving progress bar).
    """
    workers = resolve_workers(workers)
    paths = list(paths)
    chunk = chunk or max(MIN_CHUNK, min(MAX_CHUNK, len(paths) // (workers * 16)))
    pieces = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    with bar:
        if workers == 1 or len(pieces) < 2:
            results = []
            for piece in pieces:
                results += _check_chunk(piece, method, hash_size)
                bar.update(len(piece))
            return results
        done: list[list[Checked]] = [[] for _ in pieces]
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(pieces)), mp_context=_context()) as pool:
                futures = {pool.submit(_check_chunk, piece, method, hash_size): k for k, piece in enumerate(pieces)}
                for future in as_completed(futures):
                    done[futures[future]] = future.result()
                    bar.update(len(pieces[futures[future]]))
        except BrokenProcessPool as exc:
            raise DataError(f"a worker process decoding images stopped ({exc}); from a script, keep its work under "
                            "`if __name__ == \"__main__\":`, or use one worker (scan.workers: 1, --workers 1)") from exc
        return [result for piece in done for result in piece]
