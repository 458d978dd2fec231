"""A dataset description (`data.yaml`): where the splits are and what the classes are called.

Reads the forms YOLOv5 and ultralytics accept, so our own builds, Roboflow / ultralytics
exports and hand-written files are read the same way:

* `path:` the dataset root, absolute or relative to the yaml's folder (ultralytics takes a
  relative root from its datasets folder, YOLOv5 from the working directory; the yaml's folder
  keeps a dataset independent of where a command runs). Without it, the yaml's folder.
* `train`, `val` (or ultralytics' `validation`), `test`: an images folder, a `.txt` file listing
  images, one image, or a list of those. Relative entries start at the root; an entry that starts
  with `../` and is not found there is tried without it, as ultralytics does for Roboflow's exports.
* `names`: a list, or an `{id: name}` mapping with ids 0..n-1; `nc` is optional and must agree.
  With `nc` alone the classes are called `class0`, `class1`, ... as YOLOv5 does.
* `ignore_regions: true` (ours; other readers skip the key): an image may have areas that train
  neither as a ball nor as background, in `ignore/NAME.txt` beside `labels/` (label lines; the class
  column is kept for a person reading them and not used). A missing file means none. `mhyolo adapt`
  writes them where its teacher was unsure.

A form that cannot be read (a URL, a glob pattern, a file of another kind, a number) is refused
with the key and line that holds it; nothing is dropped silently. An entry naming a missing
folder or file is kept as `missing`: whoever reads the split reports it with the same key and line.
Paths keep the symbolic links they were reached through (see `mhyolo.paths.absolute_path`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mhyolo.config import read_yaml
from mhyolo.data.pathstr import label_file_for
from mhyolo.errors import DataError
from mhyolo.paths import absolute_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LIST_SUFFIX = ".txt"
SPLIT_KEYS = ("train", "val", "test")
FOLDER, LIST, IMAGE, MISSING = "folder", "list", "image", "missing"


@dataclass(frozen=True)
class SplitEntry:
    """One entry of a split: what `data.yaml` says (key, text, line) and what it names."""

    yaml_path: Path
    key: str  # the data.yaml key it is listed under: train | val | validation | test
    text: str  # the entry as written
    line: int  # 1-based line of the entry in data.yaml, 0 when unknown
    path: Path  # absolute, symbolic links kept
    kind: str  # folder | list | image | missing

    @property
    def where(self) -> str:
        """`data.yaml:line` for messages."""
        return f"{self.yaml_path}:{self.line}" if self.line else str(self.yaml_path)

    def missing_reason(self) -> str:
        return f"'{self.key}' entry '{self.text}' names {self.path}, which does not exist"


@dataclass
class DataSpec:
    """Resolved dataset description: the entries of each split and the class names."""

    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, list[SplitEntry]] = field(default_factory=dict)  # split name -> its entries
    type_names: list[str] | None = None  # optional: names of the type classes (multi-head datasets)
    ignore_regions: bool = False  # images may have ignore regions (`ignore/` beside `labels/`)

    @property
    def nc(self) -> int:
        return len(self.names)

    def entries(self, split: str) -> list[SplitEntry]:
        if split not in self.splits:
            raise DataError(f"{self.yaml_path}: no '{split}' split (has: {', '.join(self.splits) or 'none'})")
        return self.splits[split]

    def describe(self, split: str) -> str:
        """The split's entries as paths, for messages."""
        return ", ".join(str(e.path) for e in self.entries(split))

    def images_dir(self, split: str) -> Path:
        """The images folder of a split that is one folder (lists and several entries have none)."""
        entries = self.entries(split)
        if len(entries) != 1 or entries[0].kind != FOLDER:
            raise DataError(f"{self.yaml_path}: split '{split}' is not one images folder ({self.describe(split)})")
        return entries[0].path


def label_path_for(image_path: Path) -> Path:
    """YOLO convention: the last `images` folder in the path becomes `labels`, suffix `.txt`."""
    return Path(label_file_for(str(image_path)))


def _value_lines(yaml_path: Path) -> dict[str, list[int]]:
    """1-based line of each top-level value (one per item for a list), for messages."""
    try:
        root = yaml.compose(yaml_path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return {}
    lines: dict[str, list[int]] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            items = value.value if isinstance(value, yaml.SequenceNode) else [value]
            lines[str(key.value)] = [item.start_mark.line + 1 for item in items]
    return lines


def _entry(yaml_path: Path, root: Path, key: str, value: Any, line: int) -> SplitEntry:
    """Classify one split entry; refuse forms that are not read, naming them."""
    where = f"{yaml_path}:{line}" if line else str(yaml_path)
    if not isinstance(value, str) or not value.strip():
        kinds = {dict: "a mapping", list: "a nested list", bool: "a boolean", int: "a number", float: "a number"}
        form = "an empty entry" if value is None or value == "" else f"{kinds.get(type(value), 'a value')} ({value!r})"
        raise DataError(f"{where}: '{key}' holds {form}; expected an images folder, a .txt file listing images, "
                        "an image, or a list of those")
    text = value.strip()
    if "://" in text:
        raise DataError(f"{where}: '{key}' is a URL ({text}); datasets are not downloaded: fetch it and name the folder")
    base = yaml_path.parent
    candidates = [absolute_path(text, root), absolute_path(text, base)]
    if text.startswith("../"):
        candidates += [absolute_path(text[3:], root), absolute_path(text[3:], base)]
    path = next((c for c in candidates if c.exists()), candidates[0])
    if not path.exists() and any(c in text for c in "*?["):
        raise DataError(f"{where}: '{key}' is a glob pattern ({text}), which is not expanded; "
                        "name the folder, or list the images in a .txt file")
    if path.is_dir():
        kind = FOLDER
    elif path.is_file() and path.suffix.lower() == LIST_SUFFIX:
        kind = LIST
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        kind = IMAGE
    elif path.exists():
        raise DataError(f"{where}: '{key}' names {path}, a {path.suffix or 'suffix-less'} file; a split is an images "
                        f"folder, a {LIST_SUFFIX} file listing images ({', '.join(IMAGE_SUFFIXES)}) or one image")
    else:
        kind = MISSING
    return SplitEntry(yaml_path=yaml_path, key=key, text=text, line=line, path=path, kind=kind)


def _names(yaml_path: Path, data: dict[str, Any]) -> list[str]:
    """Class names from a list or an {id: name} mapping (ids 0..n-1), or from `nc` alone."""
    names = data.get("names")
    nc = data.get("nc")
    if names is None and isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
        return [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        try:
            ids = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{yaml_path}: 'names' keys must be class ids 0..n-1, got {sorted(map(str, names))}") from None
        if sorted(ids) != list(range(len(ids))):
            raise DataError(f"{yaml_path}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {sorted(ids)}")
        names = [ids[i] for i in range(len(ids))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{yaml_path}: 'names' must be a non-empty list of class names (or an {{id: name}} mapping)")
    if nc is not None and int(nc) != len(names):
        raise DataError(f"{yaml_path}: nc={nc} but {len(names)} names are listed")
    return [str(n) for n in names]


def load_data_spec(path: str | Path) -> DataSpec:
    """Load `data.yaml` (ours or an export's) or the folder holding it."""
    yaml_path = absolute_path(path)
    if yaml_path.is_dir():
        yaml_path = yaml_path / "data.yaml"
    data = read_yaml(yaml_path)
    names = _names(yaml_path, data)
    lines = _value_lines(yaml_path)
    root_value = data.get("path")
    if root_value is not None and not isinstance(root_value, str):
        raise DataError(f"{yaml_path}: 'path' must be a folder, got {root_value!r}")
    root = absolute_path(root_value, yaml_path.parent) if root_value else yaml_path.parent
    if not root.is_dir():
        line = lines.get("path", [0])[0]
        raise DataError(f"{yaml_path}:{line}: 'path' names {root}, which is not a folder")
    splits: dict[str, list[SplitEntry]] = {}
    for split in SPLIT_KEYS:
        key = "validation" if split == "val" and "val" not in data and "validation" in data else split
        if key not in data or data[key] is None:
            continue
        value = data[key]
        values = value if isinstance(value, list) else [value]
        if not values:
            raise DataError(f"{yaml_path}: '{key}' is an empty list; name at least one images folder or list file")
        key_lines = lines.get(key, [])
        splits[split] = [_entry(yaml_path, root, key, v, key_lines[i] if i < len(key_lines) else 0)
                         for i, v in enumerate(values)]
    type_names = data.get("type_names")
    ignore_regions = data.get("ignore_regions", False)
    if not isinstance(ignore_regions, bool):
        line = lines.get("ignore_regions", [0])[0]
        raise DataError(f"{yaml_path}:{line}: 'ignore_regions' must be true or false, got {ignore_regions!r}")
    return DataSpec(yaml_path=yaml_path, root=root, names=names, splits=splits,
                    type_names=[str(n) for n in type_names] if type_names else None,
                    ignore_regions=ignore_regions)
