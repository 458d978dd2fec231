"""Perceptual hashes of a source's images kept between builds, so a rebuild decodes only what changed.

One file per source folder and hash setting under `$MHYOLO_HOME/hashes/` (see
`mhyolo.paths.cache_dir`), rewritten after each scan of that source with the images it
holds now. An entry is used only while its file has the same size, modification time
and inode as when it was hashed; a file that failed to decode is not stored, so it is
checked again. The file is plain arrays (`numpy.load` with pickles refused); one that
cannot be read is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import imagehash
import numpy as np
import PIL

from mhyolo.paths import cache_dir

FORMAT = 1
Stamp = tuple[int, int, int]  # size, mtime_ns, inode


def file_stamp(path: Path) -> Stamp | None:
    """What identifies a file's content without reading it; None for a file that cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


class HashStore:
    """Stored hashes of one source's images (keyed by resolved path) for one hash setting."""

    def __init__(self, root: Path, method: str, hash_size: int, thumb: int, folder: Path | None = None) -> None:
        key = "|".join(map(str, (FORMAT, root.resolve(), method, hash_size, thumb, PIL.__version__,
                                 imagehash.__version__)))
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = (folder or cache_dir() / "hashes") / f"{method}-{hash_size}-{name}.npz"
        self.bits = hash_size * hash_size

    def load(self) -> dict[str, tuple[Stamp, np.ndarray]]:
        """Stored entries (resolved path -> (stamp, hash)); empty when there is no usable file."""
        try:
            with np.load(self.path, allow_pickle=False) as data:
                names = [os.fsdecode(n) for n in data["names"].tobytes().split(b"\0")]
                stamps, packed = data["stamps"], data["hashes"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return {}
        if stamps.shape != (len(names), 3) or packed.shape != (len(names), -(-self.bits // 8)):
            return {}
        hashes = np.unpackbits(packed, axis=1, count=self.bits).astype(bool)
        return {name: (tuple(int(v) for v in stamp), h) for name, stamp, h in zip(names, stamps, hashes)}

    def save(self, entries: dict[str, tuple[Stamp, np.ndarray]]) -> None:
        """Replace the stored entries (written beside and renamed, so a reader never sees half a file)."""
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        names = list(entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"names": np.frombuffer(b"\0".join(os.fsencode(n) for n in names), dtype=np.uint8),
                  "stamps": np.array([entries[n][0] for n in names], dtype=np.int64).reshape(-1, 3),
                  "hashes": np.packbits(np.stack([entries[n][1] for n in names]), axis=1)}
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
