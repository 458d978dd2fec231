"""Exact Hamming-range search over binary hashes by multi-index hashing (pure numpy).

Comparing every hash with every other costs n² (20 minutes at 100,000 images). Here the
bits are cut into chunks and each chunk is given a radius so that the radii plus one sum
to more than the threshold: two hashes within `threshold` bits then lie within its radius
in at least one chunk (pigeonhole), so only hashes whose chunk keys are that close are
compared. Each chunk is a sorted array of integer keys; a radius-ρ lookup probes every key
within ρ bit flips. A pair is kept by the first chunk that finds it, so it is reported once,
and every candidate's full distance is checked, so the result is exactly the all-pairs one.

The chunking is chosen by a cost model for uniformly random bits; `plan_search` returns
None when no chunking skips enough of the comparisons to be worth it (a threshold too
close to half the bits), and the caller falls back to all pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from math import comb

import numpy as np

KEY_BITS = 62  # longest chunk key (an int64); a longer chunk is looked up by its first KEY_BITS bits
MAX_PROBES = 4096  # most keys probed per hash and chunk
MAX_FRACTION = 1 / 8  # an index that compares more than this share of all pairs is not worth it
_BATCH = 1 << 19  # candidate pairs expanded at a time (bounds memory: a few tens of MB)
_ITEMS = 1 << 15  # hashes probed at a time (their temporaries take a few MB, not bytes per hash)
# Seconds per key looked up (in a table of bucket starts / by binary search) and per candidate
# pair compared, measured with numpy on one core of an AMD EPYC; they only rank chunkings.
_TABLE_COST, _SEARCH_COST, _CANDIDATE_COST = 5e-8, 2.2e-7, 2.2e-8


def _use_table(length: int, n: int) -> bool:
    """Whether keys of `length` bits are looked up in a table (its size stays within a few times n)."""
    return 2 ** length <= max(4 * n, 1 << 16)


@lru_cache(maxsize=None)
def _ball(length: int, radius: int) -> int:
    """Keys of `length` bits within `radius` flips of a given key."""
    return sum(comb(length, d) for d in range(radius + 1))


@dataclass(frozen=True)
class Chunk:
    """Bits start..start+length of the hash, looked up within `radius` flips."""

    start: int
    length: int
    radius: int

    @property
    def probes(self) -> int:
        return _ball(self.length, self.radius)

    @property
    def fraction(self) -> float:
        """Share of all pairs of uniformly random hashes this chunk compares."""
        return self.probes / 2.0 ** self.length


@dataclass(frozen=True)
class SearchPlan:
    """How the bits of a hash are cut into chunks for a given threshold."""

    bits: int
    threshold: int
    chunks: tuple[Chunk, ...]

    @property
    def fraction(self) -> float:
        return sum(c.fraction for c in self.chunks)

    def cost(self, n: int) -> float:
        """Estimated seconds to search `n` uniformly random hashes."""
        return sum(n * c.probes * (_TABLE_COST if _use_table(c.length, n) else _SEARCH_COST)
                   + n * n / 2 * c.fraction * _CANDIDATE_COST for c in self.chunks)


def chunking(bits: int, threshold: int, m: int) -> SearchPlan:
    """`m` chunks of near-equal length whose radii + 1 sum to threshold + 1 (the longest chunks get
    the larger radii)."""
    lengths = [bits // m + (1 if i < bits % m else 0) for i in range(m)]
    slots = [(threshold + 1) // m + (1 if i < (threshold + 1) % m else 0) for i in range(m)]
    chunks, start = [], 0
    for length, slot in zip(lengths, slots):
        chunks.append(Chunk(start, min(length, KEY_BITS), slot - 1))
        start += length
    return SearchPlan(bits, threshold, tuple(chunks))


def plan_search(bits: int, threshold: int, n: int = 100_000) -> SearchPlan | None:
    """The cheapest chunking for `n` hashes of `bits` bits, or None when none is worth it
    (each hash would probe more than MAX_PROBES keys, or more than MAX_FRACTION of all pairs
    would be compared, or the threshold is not below `bits`); whether there is one depends
    on bits and threshold only, not on `n`."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if threshold >= bits:
        return None
    plans = [chunking(bits, threshold, m) for m in range(1, threshold + 2)]
    usable = [p for p in plans if all(c.probes <= MAX_PROBES and c.length >= 1 for c in p.chunks)
              and p.fraction <= MAX_FRACTION]
    return min(usable, key=lambda p: (p.cost(max(n, 2)), len(p.chunks))) if usable else None


def max_threshold(bits: int) -> int:
    """The largest threshold the index serves for `bits`-bit hashes (-1: none)."""
    threshold = 0
    while threshold < bits and plan_search(bits, threshold) is not None:
        threshold += 1
    return threshold - 1


def pack_bits(hashes: np.ndarray) -> np.ndarray:
    """(n, bits) booleans -> (n, words) uint64 where bit b of a hash is bit b % 64 of word b // 64."""
    n, bits = hashes.shape
    words = np.zeros((n, -(-bits // 64) * 8), dtype=np.uint8)
    words[:, :-(-bits // 8)] = np.packbits(hashes, axis=1, bitorder="little")
    return words.view("<u8").reshape(n, -1)


# Each byte with its bits in reverse order: numpy's packed rows put a hash's first bit highest.
_REVERSED = np.array([int(f"{v:08b}"[::-1], 2) for v in range(256)], dtype=np.uint8)


def packed_words(packed: np.ndarray, bits: int) -> np.ndarray:
    """`pack_bits` of the hashes whose rows `numpy.packbits` packed (`mhyolo.data.dedup.pack_hashes`),
    without unpacking them to one byte per bit."""
    n = len(packed)
    words = np.zeros((n, -(-bits // 64) * 8), dtype=np.uint8)
    words[:, :packed.shape[1]] = _REVERSED[packed]
    return words.view("<u8").reshape(n, -1)


def _keys(words: np.ndarray, chunk: Chunk) -> np.ndarray:
    """The chunk's bits as integers (its bit b is worth 2**b), shifted out of the packed words."""
    word, shift = divmod(chunk.start, 64)
    keys = words[:, word] >> np.uint64(shift)
    if shift + chunk.length > 64:  # the chunk runs on into the next word
        keys |= words[:, word + 1] << np.uint64(64 - shift)
    return (keys & np.uint64((1 << chunk.length) - 1)).astype(np.int64)


def _masks(length: int, radius: int) -> Iterator[np.int64]:
    """Every XOR mask of `length` bits with 0..radius bits set."""
    for d in range(radius + 1):
        for bits in combinations(range(length), d):
            yield np.int64(sum(1 << b for b in bits))


def _expand(src: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(source, position) for every position in lo[k]..hi[k] of every source k, a bounded batch at a time."""
    counts = hi - lo
    keep = counts > 0
    src, lo, counts = src[keep], lo[keep], counts[keep]
    if not len(src):
        return
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(_BATCH, int(ends[-1]), _BATCH), side="right")
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(src)]])):
        if a == b:
            continue
        c = counts[a:b]
        starts = np.cumsum(c) - c
        offset = np.arange(int(c.sum()), dtype=np.int64) - np.repeat(starts, c)
        yield np.repeat(src[a:b], c), np.repeat(lo[a:b], c) + offset


class _SortedKeys:
    """One chunk's keys sorted, with the range of positions holding a given key: a table of
    bucket starts when the key space is small next to the number of keys, else binary search."""

    def __init__(self, keys: np.ndarray, length: int) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.starts: np.ndarray | None = None
        if _use_table(length, len(keys)):
            counts = np.bincount(keys, minlength=2 ** length)
            self.starts = np.concatenate([[0], np.cumsum(counts)])

    def bounds(self, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions lo..hi (hi exclusive) of the keys equal to each probe."""
        if self.starts is not None:
            return self.starts[probe], self.starts[probe + 1]
        return np.searchsorted(self.keys, probe, side="left"), np.searchsorted(self.keys, probe, side="right")


def _candidates(keys_a: np.ndarray, keys_b: np.ndarray, chunk: Chunk, same: bool
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i into a, j into b) whose keys are within the chunk's radius; with `same`
    (a is b) every unordered pair once and no pair of an item with itself."""
    table = _SortedKeys(keys_b, chunk.length)
    items = np.arange(len(keys_a), dtype=np.int64)
    pos = np.empty(0, dtype=np.int64)
    if same:  # each item's place in the sorted order
        pos = np.empty(len(items), dtype=np.int64)
        pos[table.order] = items
    for mask in _masks(chunk.length, chunk.radius):
        for start in range(0, len(items), _ITEMS):  # a block of items at a time: bounded temporaries
            part, keys = items[start:start + _ITEMS], keys_a[start:start + _ITEMS]
            probe = keys ^ mask
            if same and mask == 0:
                # equal keys: partners after the item's own place in the sorted order
                src, lo, hi = part, pos[start:start + _ITEMS] + 1, table.bounds(probe)[1]
            else:
                src = part[probe > keys] if same else part  # each unordered pair from its smaller key
                lo, hi = table.bounds(probe[src - start])
            for i, position in _expand(src, lo, hi):
                yield i, table.order[position]


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a ^ b).sum(axis=1, dtype=np.int64)


def _search(words_a: np.ndarray, words_b: np.ndarray, plan: SearchPlan, same: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys_a = [_keys(words_a, c) for c in plan.chunks]
    keys_b = keys_a if same else [_keys(words_b, c) for c in plan.chunks]
    found_i, found_j, found_d = [], [], []
    for index, chunk in enumerate(plan.chunks):
        for i, j in _candidates(keys_a[index], keys_b[index], chunk, same):
            dist = _distance(words_a[i], words_b[j])
            near = dist <= plan.threshold
            i, j, dist = i[near], j[near], dist[near]
            for earlier, prior in enumerate(plan.chunks[:index]):  # found there already
                later = np.bitwise_count(keys_a[earlier][i] ^ keys_b[earlier][j]) > prior.radius
                i, j, dist = i[later], j[later], dist[later]
            found_i.append(i)
            found_j.append(j)
            found_d.append(dist)
    i, j, d = (np.concatenate(x) if x else np.zeros(0, dtype=np.int64) for x in (found_i, found_j, found_d))
    if same:
        i, j = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def index_word_pairs(words: np.ndarray, plan: SearchPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays (i, j, distance), i < j, sorted, of rows of packed `words` (`pack_bits`, `packed_words`)
    within the plan's threshold."""
    return _search(words, words, plan, same=True)


def index_word_cross_pairs(words_a: np.ndarray, words_b: np.ndarray, plan: SearchPlan
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays (i, j, distance), sorted, with row i of `words_a` and row j of `words_b` within the plan's
    threshold."""
    return _search(words_a, words_b, plan, same=False)


def index_pairs(hashes: np.ndarray, plan: SearchPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays (i, j, distance), i < j, sorted, of rows of boolean `hashes` within the plan's threshold."""
    return index_word_pairs(pack_bits(hashes), plan)


def index_cross_pairs(a: np.ndarray, b: np.ndarray, plan: SearchPlan
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays (i, j, distance), sorted, with row i of `a` and row j of `b` within the plan's threshold."""
    return index_word_cross_pairs(pack_bits(a), pack_bits(b), plan)
