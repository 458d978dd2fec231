"""`build_dataset`: run a recipe and write one YOLO dataset plus its report.

Output layout (what ultralytics-style loaders and `mhyolo.data.spec` expect):
`images/{train,val}`, `labels/{train,val}`, `data.yaml` (`path: .`), and the
report files. Images are named `<class>_<source>_<nnnn><ext>` (negatives:
`negative_<source>_<nnnn><ext>`), numbered per class and source in the order of
their source paths; their bytes are copied unchanged (or hard-linked).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict
from operator import attrgetter
from pathlib import Path

import yaml
from tqdm import tqdm

from mhyolo.config import to_dict
from mhyolo.data.labels import write_labels
from mhyolo.data.naming import NEGATIVE, output_stem
from mhyolo.data.pathstr import suffix
from mhyolo.data.recipe import Recipe
from mhyolo.data.report import BOX_PLOT, REPORT_JSON, REPORT_MD, BuildReport, OutputImage, SourceSummary
from mhyolo.data.select import (TRAIN, VAL, balance_classes, drop_cross_source, group_candidates, sample_sources,
                                split_by_groups, stable_order)
from mhyolo.data.sources import Candidate, HashCache, SourceScan, scan_source
from mhyolo.data.stages import Stages
from mhyolo.data.verify import verify_dataset
from mhyolo.errors import DataError

SPLITS = (TRAIN, VAL)
# Everything a build writes; --overwrite removes exactly these and nothing else.
BUILD_FILES = ("data.yaml", REPORT_JSON, REPORT_MD, BOX_PLOT)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder unless `overwrite` (checked before the slow work starts)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: folder is not empty; pass --overwrite to replace a previous build")


def split_dirs(splits: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{kind}/{split}" for kind in ("images", "labels") for split in splits)


def prepare_output(out: Path, overwrite: bool, splits: tuple[str, ...] = SPLITS) -> None:
    """Clear only what a build writes (other files stay) and create the split folders."""
    check_output(out, overwrite)
    if out.is_dir():
        for name in BUILD_FILES:
            (out / name).unlink(missing_ok=True)
        for name in split_dirs(splits):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("images", "labels"):
            if (out / name).is_dir() and not any((out / name).iterdir()):
                (out / name).rmdir()
    for name in split_dirs(splits):
        (out / name).mkdir(parents=True, exist_ok=True)


def _place(src: Path, dst: Path, link: bool) -> None:
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system: fall back to a copy
    shutil.copyfile(src, dst)


def name_outputs(chosen: list[Candidate], classes: list[str]) -> list[OutputImage]:
    """Standard names, numbered per (class, source) in source-path order, in each candidate's split.

    Takes the candidates out of `chosen`, which is left empty: each one is let go as its output is
    made, so the two are not both held for every image.
    """
    by_key: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for cand in stable_order(chosen):
        cls = NEGATIVE if cand.target is None else classes[cand.target]
        by_key[(cls, cand.source)].append(cand)
    chosen.clear()
    outputs: list[OutputImage] = []
    for (cls, source), cands in by_key.items():
        width = max(4, len(str(len(cands))))
        cands.reverse()  # taken from the end, in order
        for n in range(1, len(cands) + 1):
            cand = cands.pop()
            name = f"{output_stem(cls, source, n, width)}{suffix(cand.path).lower()}"
            outputs.append(OutputImage(file=f"images/{cand.split}/{name}", split=cand.split, cls=cls,
                                       source=source, origin=cand.path, group=cand.group,
                                       packed_boxes=cand.packed_boxes))
    return sorted(outputs, key=attrgetter("file"))


def write_outputs(out: Path, outputs: list[OutputImage], classes: list[str], link: bool, progress: bool,
                  splits: tuple[str, ...] = SPLITS) -> None:
    for img in tqdm(outputs, desc="write", unit="img", disable=not progress, leave=False):
        dst = out / img.file
        _place(Path(img.origin), dst, link)
        write_labels(out / "labels" / img.split / Path(img.file).with_suffix(".txt").name, img.boxes)
    spec = {"path": ".", **{split: f"images/{split}" for split in splits}, "nc": len(classes),
            "names": list(classes)}
    (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def _source_summaries(recipe: Recipe, scans: list[SourceScan], outputs: list[OutputImage],
                      drops_by_source: dict[str, Counter]) -> dict[str, SourceSummary]:
    summaries = {}
    for src, scan in zip(recipe.sources, scans):
        written = Counter(o.split for o in outputs if o.source == src.id)
        summaries[src.id] = SourceSummary(
            path=str(scan.root), images_seen=scan.images_seen, written={s: written[s] for s in SPLITS},
            drops=dict(drops_by_source[src.id]), kept_boxes=dict(scan.kept_boxes),
            dropped_boxes=dict(scan.dropped_boxes), mixed=scan.mixed)
    return summaries


def build_dataset(recipe: Recipe, out: str | Path, overwrite: bool = False, progress: bool = True,
                  verify: bool = True, stages: Stages | None = None) -> BuildReport:
    """Build the dataset `recipe` describes into `out` and write its report there.

    Every source image ends up either written or listed in `report.drops` with a reason.
    With `verify`, the written dataset is checked again (decode, labels, no near-duplicate
    across train/val) and a failure raises DataError. `stages` records the time of each stage.
    """
    stages = stages or Stages()
    out = Path(out).resolve()
    check_output(out, overwrite)
    cache: HashCache = {}
    scans = [scan_source(recipe, i, progress=progress, cache=cache, stages=stages)
             for i in range(len(recipe.sources))]
    del cache  # the candidates hold the hashes they need
    drops = [d for scan in scans for d in scan.drops]
    cands = [c for scan in scans for c in scan.candidates]
    for scan in scans:
        scan.candidates = []  # held here from now on, so they can go once the outputs are named
    with stages("dedup"):
        pairs, groups = group_candidates(cands, recipe.dedup.threshold, recipe.dedup.hash_size ** 2)
    with stages("select"):
        cands, dup_drops, duplicates = drop_cross_source(cands, pairs)
        del pairs
        chosen, sample_drops = sample_sources(cands, recipe)
        del cands  # only the chosen are held from here on
        chosen, balance_drops, per_class = balance_classes(chosen, recipe)
        drops += dup_drops + sample_drops + balance_drops
        split_by_groups(chosen, recipe)
        outputs = name_outputs(chosen, recipe.classes)  # lets each candidate go as it names its output

    with stages("write"):
        prepare_output(out, overwrite)
        write_outputs(out, outputs, recipe.classes, recipe.link, progress)

    drops_by_source: dict[str, Counter] = defaultdict(Counter)
    for d in drops:
        drops_by_source[d.source][d.stage] += 1
    report = BuildReport(out=str(out), classes=list(recipe.classes), seed=recipe.seed, recipe=to_dict(recipe),
                         images=outputs, sources=_source_summaries(recipe, scans, outputs, drops_by_source),
                         drops=drops, duplicates=duplicates, groups=groups, per_class=per_class)
    if verify:
        check = verify_dataset(out / "data.yaml", leak_threshold=recipe.dedup.threshold,
                               hash_method=recipe.dedup.method, hash_size=recipe.dedup.hash_size, progress=progress,
                               workers=recipe.scan.workers, stages=stages.within("verify"))
        report.verify = check.to_dict()
    with stages("report"):
        report.write(out)
    if verify and not report.verify["ok"]:
        first = report.verify["problems"][0]
        raise DataError(f"{out}: the built dataset fails verification ({len(report.verify['problems'])} problems, "
                        f"first: {first['file']}: {first['reason']}); see {out / REPORT_MD}")
    return report
