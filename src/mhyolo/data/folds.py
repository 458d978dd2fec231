"""Leave-one-source-out folds: a recipe's dataset built without one source, scored on that source.

A user's photos never come from our training sources, so the honest measure of a recipe
is how it does on a source it never saw. A fold holds one source out:

* `images/test` holds every verified image of the held-out source (negatives too: they
  measure false alarms), with its boxes remapped as the recipe says;
* `images/train` and `images/val` are the recipe built from the other sources, with every
  image that is a near-duplicate of a held-out image removed first (seed_balls' tennis
  images are copies of tennis_icifx's: holding one out must take the copies out of training);
* sampling, balancing and the split follow the recipe; a count that asks for more images than
  the fold has left takes what there is, and a class that only the held-out source had is left
  out of balancing, rather than failing the build.

The sources are scanned (decoded and hashed) once for all folds through a shared cache.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.data.build import name_outputs, prepare_output, write_outputs
from mhyolo.data.recipe import Recipe
from mhyolo.data.select import (TRAIN, VAL, balance_classes, drop_cross_source, group_candidates, sample_sources,
                                split_by_groups)
from mhyolo.data.sources import HashCache, SourceScan, scan_source
from mhyolo.data.verify import verify_dataset
from mhyolo.errors import ConfigError, DataError

TEST = "test"
FOLD_SPLITS = (TRAIN, VAL, TEST)
FOLD_JSON = "fold.json"


@dataclass
class FoldReport:
    """What one fold holds: image counts per split, and the images left out as held-out copies."""

    held_out: str
    sources: list[str]  # the sources trained on
    counts: dict[str, dict[str, int]]  # split -> {"images", "boxes", "negatives"}
    held_out_copies: list[dict[str, str]] = field(default_factory=list)  # training images near a test image
    types_in_training: list[str] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path) -> None:
        (out / FOLD_JSON).write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf-8")


def scan_all(recipe: Recipe, progress: bool = True, cache: HashCache | None = None) -> list[SourceScan]:
    """Verify, remap and hash every source once (the folds share the result)."""
    cache = {} if cache is None else cache
    return [scan_source(recipe, i, progress=progress, cache=cache) for i in range(len(recipe.sources))]


def _without(recipe: Recipe, held_out: str) -> Recipe:
    kept = [src for src in recipe.sources if src.id != held_out]
    fold = dataclasses.replace(recipe, sources=kept)
    fold.base_dir = recipe.base_dir
    return fold


def build_fold(recipe: Recipe, held_out: str, out: str | Path, scans: list[SourceScan] | None = None,
               progress: bool = True, verify: bool = True) -> FoldReport:
    """Write the fold that holds source `held_out` out into `out` (train/val/test + data.yaml)."""
    ids = [src.id for src in recipe.sources]
    if held_out not in ids:
        raise ConfigError(f"no source named {held_out!r} in the recipe (sources: {', '.join(ids)})")
    if len(ids) < 2:
        raise ConfigError("leave-one-source-out needs a recipe with at least two sources")
    out = Path(out).resolve()
    scans = scans if scans is not None else scan_all(recipe, progress)
    # fresh copies: grouping writes `group` on every candidate, and folds must not see each other's
    cands = [dataclasses.replace(c) for scan in scans for c in scan.candidates]
    group_candidates(cands, recipe.dedup.threshold, recipe.dedup.hash_size ** 2)
    test = [c for c in cands if c.source == held_out]
    if not test:
        raise DataError(f"source {held_out!r} has no usable image to hold out")
    test_groups = {c.group for c in test}
    near_test = [c for c in cands if c.source != held_out and c.group in test_groups]
    rest = [c for c in cands if c.source != held_out and c.group not in test_groups]

    fold_recipe = _without(recipe, held_out)
    index = {src.id: i for i, src in enumerate(fold_recipe.sources)}
    rest = [dataclasses.replace(c, source_index=index[c.source]) for c in rest]
    pairs, _ = group_candidates(rest, recipe.dedup.threshold, recipe.dedup.hash_size ** 2)
    rest, _, _ = drop_cross_source(rest, pairs)
    chosen, _ = sample_sources(rest, fold_recipe, cap=True)
    chosen, _, _ = balance_classes(chosen, fold_recipe, skip_empty=True)
    if not any(c.target is not None for c in chosen):
        raise DataError(f"holding out {held_out!r} leaves no labelled image to train on")
    split_by_groups(chosen, fold_recipe)
    for cand in test:
        cand.split = TEST
    outputs = name_outputs(chosen + test, recipe.classes)

    prepare_output(out, overwrite=True, splits=FOLD_SPLITS)
    write_outputs(out, outputs, recipe.classes, recipe.link, progress, splits=FOLD_SPLITS)
    counts = {split: {"images": sum(o.split == split for o in outputs),
                      "boxes": sum(len(o.boxes) for o in outputs if o.split == split),
                      "negatives": sum(o.split == split and not len(o.boxes) for o in outputs)}
              for split in FOLD_SPLITS}
    types = sorted({recipe.classes[c.target] for c in chosen if c.target is not None},
                   key=recipe.classes.index)
    report = FoldReport(held_out=held_out, sources=[s.id for s in fold_recipe.sources], counts=counts,
                        held_out_copies=[{"image": c.path, "source": c.source} for c in near_test],
                        types_in_training=types)
    if verify:
        check = verify_dataset(out / "data.yaml", leak_threshold=recipe.dedup.threshold,
                               hash_method=recipe.dedup.method, hash_size=recipe.dedup.hash_size, progress=progress,
                               workers=recipe.scan.workers)
        report.verify = check.to_dict()
        if not check.ok:
            first = check.problems[0]
            raise DataError(f"{out}: fold '{held_out}' fails verification ({len(check.problems)} problems, "
                            f"first: {first})")
    report.write(out)
    return report
