"""Near-duplicate detection with a perceptual hash, and grouping by union-find.

Two images whose hashes differ in at most `threshold` bits are near-duplicates;
near-duplicates are chained into groups (frame 1 ~ frame 2 ~ frame 3 puts all
three together), so a split made by groups cannot put copies on both sides.
Pairs are found with the multi-index search of `mhyolo.data.hash_index`, which
returns exactly what comparing every hash with every other returns (`all_cross_pairs`,
kept as the reference); a threshold the index cannot serve falls back to that
comparison, in blocks so memory stays bounded, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from mhyolo.data.hash_index import (SearchPlan, index_cross_pairs, index_pairs, index_word_cross_pairs,
                                     index_word_pairs, max_threshold, packed_words, plan_search)

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_METHOD = "phash"
_HASHERS = {  # method -> the imagehash function (imported on first use: the runtime install has no imagehash)
    "phash": "phash",
    "dhash": "dhash",
    "ahash": "average_hash",
    "whash": "whash",
}
_BLOCK = 1024


def image_hash(img: Image.Image, method: str = DEFAULT_METHOD, hash_size: int = 8) -> np.ndarray:
    """The perceptual hash of `img` as a flat boolean bit array (a copy that holds no other array alive)."""
    import imagehash

    return np.asarray(getattr(imagehash, _HASHERS[method])(img, hash_size=hash_size).hash, dtype=bool).flatten()


def pack_hashes(hashes: np.ndarray) -> np.ndarray:
    """Boolean hash bits (..., bits) as bytes (..., ceil(bits / 8)): a 64-bit hash kept in 8 bytes, not 64."""
    return np.packbits(hashes, axis=-1)


def unpack_hashes(packed: np.ndarray, bits: int) -> np.ndarray:
    """`pack_hashes` undone: (..., bits) booleans."""
    return np.unpackbits(packed, axis=-1, count=bits).view(bool)  # 0/1 bytes are booleans: no copy


def _blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """Hamming distances between rows of `a` and rows of `b`, one block of rows of `a` at a time."""
    bf = b.astype(np.int32)
    for start in range(0, len(a), _BLOCK):
        af = a[start:start + _BLOCK].astype(np.int32)
        # bits set in exactly one of the two hashes
        yield start, 0, af @ (1 - bf).T + (1 - af) @ bf.T


def all_cross_pairs(a: np.ndarray, b: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance) with row i of `a` and row j of `b` within `threshold` bits, by comparing
    every row with every row (the reference the index is tested against)."""
    pairs: list[tuple[int, int, int]] = []
    for start, _, dist in _blocks(a, b):
        rows, cols = np.nonzero(dist <= threshold)
        pairs.extend((start + int(r), int(c), int(dist[r, c])) for r, c in zip(rows, cols))
    return pairs


def all_near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, of rows of `hashes` within `threshold` bits, comparing all pairs."""
    return [(i, j, d) for i, j, d in all_cross_pairs(hashes, hashes, threshold) if i < j]


class AllPairsWarning(UserWarning):
    """The threshold is beyond what the index serves: every hash is compared with every other (slow)."""


def _plan(bits: int, threshold: int, n: int) -> SearchPlan | None:
    if threshold < 0:
        raise ValueError(f"near-duplicate threshold must be >= 0, got {threshold}")
    plan = plan_search(bits, threshold, n)
    if plan is None:
        warnings.warn(f"near-duplicate threshold {threshold} on {bits}-bit hashes is above what the index serves "
                      f"({max_threshold(bits)} at most): comparing every pair of images instead, which takes "
                      "minutes from about 20,000 images on; lower dedup.threshold or raise dedup.hash_size",
                      AllPairsWarning, stacklevel=3)
    return plan


def _as_list(found: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[int, int, int]]:
    return list(zip(*(x.tolist() for x in found)))


def cross_pairs(a: np.ndarray, b: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), sorted, with row i of `a` and row j of `b` within `threshold` bits."""
    if not len(a) or not len(b):
        return []
    plan = _plan(a.shape[1], threshold, len(a) + len(b))
    return all_cross_pairs(a, b, threshold) if plan is None else _as_list(index_cross_pairs(a, b, plan))


def near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, sorted, of rows of `hashes` within `threshold` bits."""
    if len(hashes) < 2:
        return []
    plan = _plan(hashes.shape[1], threshold, len(hashes))
    return all_near_pairs(hashes, threshold) if plan is None else _as_list(index_pairs(hashes, plan))


def packed_cross_pairs(a: np.ndarray, b: np.ndarray, bits: int, threshold: int) -> list[tuple[int, int, int]]:
    """`cross_pairs` of hashes kept packed (`pack_hashes` rows of `bits`-bit hashes): the index reads
    them as they are, where a boolean copy would take a byte per bit."""
    if not len(a) or not len(b):
        return []
    plan = _plan(bits, threshold, len(a) + len(b))
    if plan is None:
        return all_cross_pairs(unpack_hashes(a, bits), unpack_hashes(b, bits), threshold)
    return _as_list(index_word_cross_pairs(packed_words(a, bits), packed_words(b, bits), plan))


def packed_near_pairs(packed: np.ndarray, bits: int, threshold: int) -> list[tuple[int, int, int]]:
    """`near_pairs` of hashes kept packed (`pack_hashes` rows of `bits`-bit hashes)."""
    if len(packed) < 2:
        return []
    plan = _plan(bits, threshold, len(packed))
    if plan is None:
        return all_near_pairs(unpack_hashes(packed, bits), threshold)
    return _as_list(index_word_pairs(packed_words(packed, bits), plan))


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
