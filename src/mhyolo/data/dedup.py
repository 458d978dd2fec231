"""Near-duplicate detection with a perceptual hash, and grouping by union-find.

Two images whose hashes differ in at most `threshold` bits are near-duplicates;
near-duplicates are chained into groups (frame 1 ~ frame 2 ~ frame 3 puts all
three together), so a split made by groups cannot put copies on both sides.
Distances are computed in blocks so memory stays bounded for large sets.
"""

from __future__ import annotations

from collections.abc import Iterator

import imagehash
import numpy as np
from PIL import Image

DEFAULT_METHOD = "phash"
_HASHERS = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}
_BLOCK = 1024


def image_hash(img: Image.Image, method: str = DEFAULT_METHOD, hash_size: int = 8) -> np.ndarray:
    """The perceptual hash of `img` as a flat boolean bit array."""
    return np.asarray(_HASHERS[method](img, hash_size=hash_size).hash, dtype=bool).reshape(-1)


def _blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """Hamming distances between rows of `a` and rows of `b`, one block of rows of `a` at a time."""
    bf = b.astype(np.int32)
    for start in range(0, len(a), _BLOCK):
        af = a[start:start + _BLOCK].astype(np.int32)
        # bits set in exactly one of the two hashes
        yield start, 0, af @ (1 - bf).T + (1 - af) @ bf.T


def cross_pairs(a: np.ndarray, b: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance) with row i of `a` and row j of `b` within `threshold` bits."""
    pairs: list[tuple[int, int, int]] = []
    for start, _, dist in _blocks(a, b):
        rows, cols = np.nonzero(dist <= threshold)
        pairs.extend((start + int(r), int(c), int(dist[r, c])) for r, c in zip(rows, cols))
    return pairs


def near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, of rows of `hashes` within `threshold` bits."""
    return [(i, j, d) for i, j, d in cross_pairs(hashes, hashes, threshold) if i < j]


class UnionFind:
    """Disjoint sets over 0..n-1; the root of a set is its smallest member, so ids are stable."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_ids(n: int, pairs: list[tuple[int, int, int]]) -> list[int]:
    """Group id of each of `n` items given near-duplicate pairs: the smallest index in its group."""
    sets = UnionFind(n)
    for i, j, _ in pairs:
        sets.union(i, j)
    return [sets.find(i) for i in range(n)]
