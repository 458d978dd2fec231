"""Perceptual hashes of a source's images kept between builds, so a rebuild decodes only what changed.

One file per source folder and hash setting under `$MHYOLO_HOME/hashes/` (see
`mhyolo.paths.cache_dir`), rewritten after each scan of that source with the images it
holds now. An entry is used only while its file has the same size, modification time
and inode as when it was hashed; a file that failed to decode is not stored, so it is
checked again. The file is plain arrays (`numpy.load` with pickles refused); one that
cannot be read is ignored and replaced. Stamps and hashes stay arrays in memory too
(no tuple per file), so a source of 100,000 images costs a few MB here.
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
UNREADABLE = -1  # the stamp of a file that cannot be read: never matches a stored one


def file_stamps(paths: list[str]) -> np.ndarray:
    """What identifies each file's content without reading it: (n, 3) size, mtime_ns, inode; a row of
    UNREADABLE for a file that cannot be read. One array, not a tuple of three ints per file."""
    stamps = np.full((len(paths), 3), UNREADABLE, dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamps[i] = st.st_size, st.st_mtime_ns, st.st_ino
    return stamps


class HashStore:
    """Stored packed hashes of one source's images (keyed by resolved path) for one hash setting."""

    def __init__(self, root: Path, method: str, hash_size: int, thumb: int, folder: Path | None = None) -> None:
        key = "|".join(map(str, (FORMAT, root.resolve(), method, hash_size, thumb, PIL.__version__,
                                 imagehash.__version__)))
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = (folder or cache_dir() / "hashes") / f"{method}-{hash_size}-{name}.npz"
        self.width = -(-hash_size * hash_size // 8)  # bytes of a packed hash

    def _read(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Stored names, stamps and packed hashes; nothing when there is no usable file."""
        nothing = [], np.zeros((0, 3), np.int64), np.zeros((0, self.width), np.uint8)
        try:
            with np.load(self.path, allow_pickle=False) as data:
                names = [os.fsdecode(n) for n in data["names"].tobytes().split(b"\0")]
                stamps, packed = data["stamps"], data["hashes"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return nothing
        if stamps.shape != (len(names), 3) or packed.shape != (len(names), self.width):
            return nothing
        return names, stamps, packed

    def lookup(self, names: list[str], stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of `names` (resolved paths) with its current stamp: whether the store holds it with
        that stamp, and its packed hash there (rows of zeros where it does not)."""
        stored, stored_stamps, stored_packed = self._read()
        rows = {name: row for row, name in enumerate(stored)}
        del stored
        where = np.fromiter((rows.get(name, -1) for name in names), dtype=np.int64, count=len(names))
        del rows
        known = where >= 0
        found = known.copy()
        found[known] = (stored_stamps[where[known]] == stamps[known]).all(axis=1)
        found &= (stamps != UNREADABLE).all(axis=1)
        packed = np.zeros((len(names), self.width), np.uint8)
        packed[found] = stored_packed[where[found]]
        return found, packed

    def save(self, names: list[str], stamps: np.ndarray, packed: np.ndarray, hashed: np.ndarray) -> None:
        """Replace the stored entries with the `hashed` rows of these (written beside and renamed, so a
        reader never sees half a file); a file that cannot be read is left out."""
        keep = hashed & (stamps != UNREADABLE).all(axis=1)
        if not keep.any():
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = bytearray()  # names, each ended by \0 (the last one's cut off): no list of a bytes object per name
        for name in (names[i] for i in np.flatnonzero(keep)):
            blob += os.fsencode(name)
            blob += b"\0"
        every = bool(keep.all())
        arrays = {"names": np.frombuffer(blob, dtype=np.uint8)[:-1], "stamps": stamps if every else stamps[keep],
                  "hashes": packed if every else packed[keep]}
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
