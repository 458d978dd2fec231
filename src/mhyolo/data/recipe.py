"""A data recipe: which YOLO sources make up a training set, and how.

A recipe is a YAML file loaded into the dataclasses below (see `configs/seed.yaml`
for a commented example). It names the target classes, then per source: which
source class becomes which target class (or is dropped), how many images to take
per target class, how many negatives, and the share that goes to val. Everything
random is driven by `seed`, so a recipe plus a seed always yields the same files.

Source paths are relative to the recipe file, absolute, or start with the
placeholder `${shared}`, which expands to `mhyolo.paths.shared_dir()` so the
shipped recipes work from any checkout. No other placeholder is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.config import from_dict, read_yaml
from mhyolo.errors import ConfigError
from mhyolo.paths import absolute_path, shared_dir

SHARED_PLACEHOLDER = "${shared}"
HASH_METHODS = ("phash", "dhash", "ahash", "whash")
MIXED_POLICIES = ("majority", "skip")
# Names go into file names, so keep them to a safe alphabet.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ALL = "all"
MIN = "min"


@dataclass
class DedupSettings:
    """Near-duplicate detection: a perceptual hash and a Hamming-distance threshold."""

    method: str = "phash"  # imagehash function: phash | dhash | ahash | whash
    hash_size: int = 8  # the hash has hash_size**2 bits
    threshold: int = 6  # images at Hamming distance <= threshold are near-duplicates


@dataclass
class ScanSettings:
    """How source images are read: changes how fast a build runs, never what it writes."""

    workers: int | None = None  # processes decoding and hashing images; None: every core (os.cpu_count())
    cache: bool = True  # keep hashes between builds ($MHYOLO_HOME/hashes): a rebuild decodes new or changed files only


@dataclass
class SourceRecipe:
    """One YOLO-format source folder and how to use it."""

    path: str  # folder holding data.yaml (or the data.yaml itself)
    classes: dict[str, str | None]  # every source class name -> target class name, or null to drop its boxes
    name: str | None = None  # short id used in output file names; default: the folder name
    sample: dict[str, int | str] | int | str = ALL  # images per target class: number or "all"; one value = every class
    negatives: int | str = 0  # images with no kept box to include: number or "all"
    val_fraction: float | None = None  # share of this source's images in val; None: the recipe's value
    splits: list[str] | None = None  # data.yaml split keys to read (train/val/test); None: all it lists

    @property
    def id(self) -> str:
        return self.name or Path(self.path).name


@dataclass
class Recipe:
    """A whole build: target classes, sources, seed and the global policies."""

    classes: list[str]  # target class names in id order
    sources: list[SourceRecipe]
    seed: int = 0
    val_fraction: float = 0.2
    per_class: int | str | None = None  # cap per target class after sampling: number, "min" or None
    mixed: str = "majority"  # image whose boxes map to several target classes: majority | skip
    link: bool = False  # hard-link images into the output instead of copying their bytes
    dedup: DedupSettings = field(default_factory=DedupSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    base_dir: Path = field(default_factory=Path.cwd, init=False)  # relative source paths start here

    def source_path(self, source: SourceRecipe) -> Path:
        """The source folder: `${shared}` expanded, relative paths taken from the recipe's folder."""
        return resolve_path(source.path, self.base_dir)


def resolve_path(value: str, base_dir: Path) -> Path:
    """Expand `${shared}` and make `value` absolute relative to `base_dir`, keeping symbolic links
    (labels are found from image paths as given; see `mhyolo.paths.absolute_path`)."""
    text = value.replace(SHARED_PLACEHOLDER, str(shared_dir()))
    if "${" in text:
        raise ConfigError(f"source path {value!r}: unknown placeholder (only {SHARED_PLACEHOLDER} is expanded)")
    return absolute_path(text, base_dir)


def _check_count(value: Any, where: str, allowed: tuple[str, ...]) -> None:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 0 or value in allowed):
        choices = " or ".join(repr(a) for a in allowed)
        raise ConfigError(f"{where}: expected a non-negative integer or {choices}, got {value!r}")


def validate_recipe(recipe: Recipe, where: str = "recipe") -> Recipe:
    """Check what the type hints cannot: names, counts, fractions and policies."""
    if not recipe.classes:
        raise ConfigError(f"{where}.classes: list at least one target class")
    if len(set(recipe.classes)) != len(recipe.classes):
        raise ConfigError(f"{where}.classes: duplicate class names in {recipe.classes}")
    for name in recipe.classes:
        if not _SAFE_NAME.match(name) or name == "negative":
            raise ConfigError(f"{where}.classes: {name!r} is not usable in file names (letters, digits, '_', '-', '.'; "
                              "'negative' is reserved)")
    if not 0.0 <= recipe.val_fraction < 1.0:
        raise ConfigError(f"{where}.val_fraction: must be in [0, 1), got {recipe.val_fraction}")
    if recipe.per_class is not None:
        _check_count(recipe.per_class, f"{where}.per_class", (MIN,))
    if recipe.mixed not in MIXED_POLICIES:
        raise ConfigError(f"{where}.mixed: expected one of {', '.join(MIXED_POLICIES)}, got {recipe.mixed!r}")
    if recipe.dedup.method not in HASH_METHODS:
        raise ConfigError(f"{where}.dedup.method: expected one of {', '.join(HASH_METHODS)}, got {recipe.dedup.method!r}")
    if recipe.dedup.hash_size < 2 or not 0 <= recipe.dedup.threshold < recipe.dedup.hash_size ** 2:
        raise ConfigError(f"{where}.dedup: need hash_size >= 2 and 0 <= threshold < hash_size**2")
    workers = recipe.scan.workers
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"{where}.scan.workers: expected a positive number of processes or null (every core), "
                          f"got {workers!r}")
    if not recipe.sources:
        raise ConfigError(f"{where}.sources: list at least one source")
    seen: set[str] = set()
    for i, src in enumerate(recipe.sources):
        at = f"{where}.sources[{i}]"
        if not _SAFE_NAME.match(src.id):
            raise ConfigError(f"{at}.name: {src.id!r} is not usable in file names; set 'name'")
        if src.id in seen:
            raise ConfigError(f"{at}.name: {src.id!r} is used by two sources; set distinct 'name's")
        seen.add(src.id)
        if not isinstance(src.classes, dict) or not src.classes:
            raise ConfigError(f"{at}.classes: map every source class name to a target class (or null to drop it)")
        for source_name, target in src.classes.items():
            if target is not None and target not in recipe.classes:
                raise ConfigError(f"{at}.classes: {source_name!r} -> {target!r} is not a target class "
                                  f"({', '.join(recipe.classes)})")
        if isinstance(src.sample, dict):
            for target, count in src.sample.items():
                if target not in recipe.classes:
                    raise ConfigError(f"{at}.sample: {target!r} is not a target class ({', '.join(recipe.classes)})")
                _check_count(count, f"{at}.sample.{target}", (ALL,))
        else:
            _check_count(src.sample, f"{at}.sample", (ALL,))
        _check_count(src.negatives, f"{at}.negatives", (ALL,))
        if src.val_fraction is not None and not 0.0 <= src.val_fraction < 1.0:
            raise ConfigError(f"{at}.val_fraction: must be in [0, 1), got {src.val_fraction}")
        if src.splits is not None and not src.splits:
            raise ConfigError(f"{at}.splits: list split keys (train, val, test) or leave it out for all")
    return recipe


def recipe_from_dict(data: dict[str, Any], base_dir: Path | None = None, where: str = "recipe") -> Recipe:
    """Build and validate a Recipe; relative source paths start at `base_dir` (default: the CWD)."""
    recipe = from_dict(Recipe, data, where)
    recipe.base_dir = absolute_path(base_dir or Path.cwd())
    return validate_recipe(recipe, where)


def load_recipe(path: str | Path, seed: int | None = None) -> Recipe:
    """Load a recipe file; `seed` (e.g. from the command line) replaces the file's seed."""
    path = Path(path)
    data = read_yaml(path)
    if seed is not None:
        data["seed"] = seed
    return recipe_from_dict(data, base_dir=absolute_path(path).parent, where=str(path))
