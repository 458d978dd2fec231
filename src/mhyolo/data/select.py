"""Choosing images for a build: cross-source dedup, seeded sampling, balancing, and a split by groups.

Order of the steps and why:
1. near-duplicates are grouped over every candidate of every source;
2. a group that spans sources keeps the copies of one source only (the first
   listed in the recipe; a labelled copy beats a negative), so counts below are
   counts after dedup;
3. each source gives its per-class `sample` and its `negatives`;
4. `per_class` brings every target class to the same number of images;
5. the split is made per (source, class) stratum by whole groups, so no
   near-duplicate sits on both sides.
Sampling walks a seeded shuffle that takes one image per group before a second
one from any group, so a small sample is spread over distinct scenes. Each step
draws from its own `random.Random` seeded with the recipe seed and the step's
name, so a change in one source does not reshuffle another.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from mhyolo.data.dedup import group_ids, packed_near_pairs
from mhyolo.data.recipe import ALL, MIN, Recipe
from mhyolo.data.sources import Candidate, Drop
from mhyolo.errors import ConfigError

TRAIN, VAL = "train", "val"


@dataclass(frozen=True)
class Duplicate:
    """A copy dropped because another source holds the same image."""

    dropped: str
    dropped_source: str
    kept: str
    kept_source: str
    distance: int


@dataclass
class GroupStats:
    """Near-duplicate groups among all candidates (before any sampling)."""

    pairs: int = 0  # near-duplicate pairs
    groups: int = 0  # groups with two or more images
    images: int = 0  # images in those groups
    largest: int = 0
    cross_source: int = 0  # groups holding images of several sources
    cross_split: int = 0  # groups spread over several splits of one source (a leak in the source's own split)


def _rng(recipe: Recipe, *parts: object) -> random.Random:
    return random.Random("/".join([str(recipe.seed), *map(str, parts)]))


def stable_order(items: list[Candidate]) -> list[Candidate]:
    """`items` by (source, path inside the source): two stable sorts on stored fields, so no key
    tuple is made per image."""
    return sorted(sorted(items, key=attrgetter("rel")), key=attrgetter("source_index"))


def spread_order(items: list[Candidate], rng: random.Random) -> list[Candidate]:
    """A seeded shuffle where the k-th image of any group comes after the (k-1)-th of every group."""
    order = stable_order(items)
    rng.shuffle(order)
    seen: Counter = Counter()
    rank = np.zeros(len(order), dtype=np.int64)  # how many of its group come before it
    for pos, cand in enumerate(order):
        rank[pos] = seen[cand.group]
        seen[cand.group] += 1
    return [order[pos] for pos in np.argsort(rank, kind="stable")]


def candidate_hashes(cands: list[Candidate], bits: int) -> np.ndarray:
    """The packed hashes of `cands`, one row each (`mhyolo.data.dedup.pack_hashes`)."""
    return np.frombuffer(b"".join(c.hash for c in cands), dtype=np.uint8).reshape(len(cands), -(-bits // 8))


def _shared_groups(cands: list[Candidate], pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    """The groups of two or more images, each as its indices into `cands` in order: only images in a
    near-duplicate pair belong to one, so the many single images cost nothing here."""
    members: dict[int, list[int]] = defaultdict(list)
    for i in sorted({k for pair in pairs for k in pair[:2]}):
        members[cands[i].group].append(i)
    return list(members.values())


def group_candidates(cands: list[Candidate], threshold: int, bits: int
                     ) -> tuple[list[tuple[int, int, int]], GroupStats]:
    """Set `group` on every candidate (index of its group's first member in `cands`) from their `bits`-bit
    hashes; returns the pairs."""
    pairs = packed_near_pairs(candidate_hashes(cands, bits), bits, threshold) if cands else []
    for cand, gid in zip(cands, group_ids(len(cands), pairs)):
        cand.group = gid
    multi = [[cands[i] for i in idx] for idx in _shared_groups(cands, pairs)]
    stats = GroupStats(pairs=len(pairs), groups=len(multi), images=sum(len(m) for m in multi),
                       largest=max((len(m) for m in multi), default=0),
                       cross_source=sum(len({c.source for c in m}) > 1 for m in multi),
                       cross_split=sum(any(len({c.source_split for c in m if c.source == s}) > 1
                                           for s in {c.source for c in m}) for m in multi))
    return pairs, stats


def drop_cross_source(cands: list[Candidate], pairs: list[tuple[int, int, int]]
                      ) -> tuple[list[Candidate], list[Drop], list[Duplicate]]:
    """Keep one source's copies of each group that spans sources; report every copy dropped (`pairs`:
    the near-duplicate pairs `group_candidates` made the groups from)."""
    distance: dict[tuple[int, int], int] = {}
    for i, j, d in pairs:
        distance[(i, j)] = distance[(j, i)] = d
    drop_idx: dict[int, Duplicate] = {}
    for idx in _shared_groups(cands, pairs):
        if len({cands[i].source for i in idx}) < 2:
            continue
        winner = min((cands[i].target is None, cands[i].source_index) for i in idx)[1]
        kept = [i for i in idx if cands[i].source_index == winner]
        for i in idx:
            if cands[i].source_index == winner:
                continue
            # name the kept copy closest to this one (a direct pair if there is one)
            best = min(kept, key=lambda k: (distance.get((i, k), 10 ** 6), k))
            dup = cands[i]
            drop_idx[i] = Duplicate(dropped=dup.path, dropped_source=dup.source, kept=cands[best].path,
                                    kept_source=cands[best].source, distance=distance.get((i, best), -1))
    drops = [Drop(cands[i].source, d.dropped, 0, "duplicate",
                  f"near-duplicate of {d.kept_source} image {d.kept}"
                  + (f" (distance {d.distance})" if d.distance >= 0 else " (same group)"))
             for i, d in sorted(drop_idx.items())]
    kept_cands = [c for i, c in enumerate(cands) if i not in drop_idx]
    return kept_cands, drops, [drop_idx[i] for i in sorted(drop_idx)]


def _take(pool: list[Candidate], count: int | str, rng: random.Random, where: str, what: str
          ) -> tuple[list[Candidate], list[Candidate]]:
    """Split `pool` into (taken, left) by `count` ("all" or a number) in spread order."""
    if count == ALL:
        return stable_order(pool), []
    count = int(count)
    if count > len(pool):
        raise ConfigError(f"{where}: asks for {count} {what} but only {len(pool)} remain after verification "
                          "and dedup")
    order = spread_order(pool, rng)
    return stable_order(order[:count]), order[count:]


def sample_sources(cands: list[Candidate], recipe: Recipe, cap: bool = False) -> tuple[list[Candidate], list[Drop]]:
    """Each source's per-class sample and its negatives; `cap` takes what is left when a count asks
    for more (a cross-validation fold has removed the held-out source's copies) instead of refusing."""
    chosen: list[Candidate] = []
    drops: list[Drop] = []
    for index, src in enumerate(recipe.sources):
        mine = [c for c in cands if c.source_index == index]
        for cls, name in enumerate(recipe.classes):
            pool = [c for c in mine if c.target == cls]
            count = src.sample.get(name, ALL) if isinstance(src.sample, dict) else src.sample
            if cap and count != ALL:
                count = min(int(count), len(pool))
            taken, left = _take(pool, count, _rng(recipe, "sample", src.id, name),
                                f"sources[{index}] ({src.id}).sample.{name}", f"'{name}' images")
            chosen += taken
            reason = f"not sampled: {src.id} '{name}' sample is {count} of {len(pool)}"  # one string for all
            drops += [Drop(c.source, c.path, 0, "sample", reason) for c in stable_order(left)]
        pool = [c for c in mine if c.target is None]
        negatives = min(int(src.negatives), len(pool)) if cap and src.negatives != ALL else src.negatives
        taken, left = _take(pool, negatives, _rng(recipe, "negatives", src.id),
                            f"sources[{index}] ({src.id}).negatives", "negative images")
        chosen += taken
        reasons: dict[tuple[str, ...], str] = {}  # one string per set of dropped classes, not one per image
        for c in stable_order(left):
            if c.dropped not in reasons:
                why = f"only dropped classes ({', '.join(c.dropped)})" if c.dropped else "no boxes"
                reasons[c.dropped] = f"negative ({why}); negatives is {src.negatives} of {len(pool)}"
            drops.append(Drop(c.source, c.path, 0, "negatives", reasons[c.dropped]))
    return stable_order(chosen), drops


def balance_classes(chosen: list[Candidate], recipe: Recipe, skip_empty: bool = False
                    ) -> tuple[list[Candidate], list[Drop], int | None]:
    """Bring every target class to `per_class` images ("min": the smallest class); negatives are not counted.

    `skip_empty` leaves classes with no image out of "min" and caps a fixed count at what a
    class has (a cross-validation fold may lack images that only its held-out source had)
    instead of refusing to build.
    """
    if recipe.per_class is None:
        return chosen, [], None
    counts = {cls: sum(1 for c in chosen if c.target == cls) for cls in range(len(recipe.classes))}
    if skip_empty:
        counts = {cls: n for cls, n in counts.items() if n} or counts
    if recipe.per_class == MIN:
        target = min(counts.values())
        if target == 0:
            empty = ", ".join(recipe.classes[c] for c, n in counts.items() if n == 0)
            raise ConfigError(f"per_class: min would build an empty dataset: no images of {empty}")
    else:
        target = int(recipe.per_class)
    kept = [c for c in chosen if c.target is None]
    drops: list[Drop] = []
    for cls, name in enumerate(recipe.classes):
        pool = [c for c in chosen if c.target == cls]
        if skip_empty and not pool:
            continue
        count = min(target, len(pool)) if skip_empty else target
        taken, left = _take(pool, count, _rng(recipe, "balance", name), f"per_class ({name})", f"'{name}' images")
        kept += taken
        reason = f"per_class keeps {target} of {len(pool)} '{name}' images"
        drops += [Drop(c.source, c.path, 0, "balance", reason) for c in stable_order(left)]
    return stable_order(kept), drops, target


def split_by_groups(chosen: list[Candidate], recipe: Recipe) -> None:
    """Set `split` on every candidate: whole groups go to val until each stratum has its share.

    Groups are counted in arrays (one row per group), not in a list of members each.
    """
    fractions = {src.id: recipe.val_fraction if src.val_fraction is None else src.val_fraction
                 for src in recipe.sources}
    order = stable_order(chosen)
    group_of = np.fromiter((c.group for c in order), dtype=np.int64, count=len(order))
    gids, first, sizes = np.unique(group_of, return_index=True, return_counts=True)  # sorted by group id
    strata: dict[tuple[str, int], list[int]] = defaultdict(list)  # -> rows of `gids`, in group id order
    for row, pos in enumerate(first.tolist()):
        cand = order[pos]  # the group's first member decides its stratum
        strata[(cand.source, -1 if cand.target is None else cand.target)].append(row)
    in_val = np.zeros(len(gids), dtype=bool)
    for (source, cls), rows in sorted(strata.items()):
        _rng(recipe, "split", source, cls).shuffle(rows)
        total = int(sizes[rows].sum())
        want = int(total * fractions[source] + 0.5)
        taken = 0
        for row in rows:
            size = int(sizes[row])
            if taken + size <= want:
                in_val[row] = True
                taken += size
    rows_of = np.searchsorted(gids, group_of)
    for cand, row in zip(order, rows_of.tolist()):
        cand.split = VAL if in_val[row] else TRAIN
