"""A dataset description (`data.yaml`): where the splits are and what the classes are called.

Reads both our own `data.yaml` and the ones Roboflow / ultralytics exports ship
(`train: ../train/images`, `val: valid/images`, a `path:` root or none), so a
source folder and a built dataset are read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mhyolo.config import read_yaml
from mhyolo.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class DataSpec:
    """Resolved dataset description: absolute image folders per split and class names."""

    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, Path] = field(default_factory=dict)  # split name -> images folder
    type_names: list[str] | None = None  # optional: names of the type classes (multi-head datasets)

    @property
    def nc(self) -> int:
        return len(self.names)

    def images_dir(self, split: str) -> Path:
        if split not in self.splits:
            raise DataError(f"{self.yaml_path}: no '{split}' split (has: {', '.join(sorted(self.splits)) or 'none'})")
        return self.splits[split]

    def image_files(self, split: str) -> list[Path]:
        """Image files of a split, sorted by name for reproducibility."""
        folder = self.images_dir(split)
        if not folder.is_dir():
            raise DataError(f"{self.yaml_path}: '{split}' images folder {folder} does not exist")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_path_for(image_path: Path) -> Path:
    """YOLO convention: the last `images` folder in the path becomes `labels`, suffix `.txt`."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def _resolve_split(yaml_path: Path, root: Path, value: str) -> Path:
    """Roboflow writes split paths relative to the yaml, sometimes with a stray `../`."""
    candidates = [root / value, yaml_path.parent / value]
    if value.startswith("../"):
        candidates.append(yaml_path.parent / value[3:])
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return (root / value).resolve()


def load_data_spec(path: str | Path) -> DataSpec:
    """Load `data.yaml` (ours or an export's); names may be a list or an {id: name} mapping."""
    yaml_path = Path(path).resolve()
    if yaml_path.is_dir():
        yaml_path = yaml_path / "data.yaml"
    data = read_yaml(yaml_path)
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise DataError(f"{yaml_path}: 'names' must be a non-empty list of class names")
    nc = data.get("nc")
    if nc is not None and int(nc) != len(names):
        raise DataError(f"{yaml_path}: nc={nc} but {len(names)} names are listed")
    root_value = data.get("path")
    root = (yaml_path.parent / root_value).resolve() if root_value else yaml_path.parent
    splits: dict[str, Path] = {}
    for split in ("train", "val", "test"):
        value = data.get(split)
        if isinstance(value, str) and value:
            splits[split] = _resolve_split(yaml_path, root, value)
    type_names = data.get("type_names")
    return DataSpec(yaml_path=yaml_path, root=root, names=[str(n) for n in names], splits=splits,
                    type_names=[str(n) for n in type_names] if type_names else None)
