"""The manifest of `mhyolo data fetch` (`fetch_manifest.yaml`, shipped in the package): its items
(single files with their SHA-256, or a dataset folder of a repository at a pinned commit), where each
file of a fetched archive lands, and the content listing every fetched dataset is checked against
(`listing_digest`: one SHA-256 of the sorted `relpath sha256` lines, computed the same way from the
copies the project's figures were made with).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Iterable

import yaml

from mhyolo.errors import MhyoloError

MANIFEST = "fetch_manifest.yaml"
SOURCE_NOTE = "SOURCE.md"  # written by the fetch; not part of the checked listing
DOWNLOADS = ".downloads"
IMAGE_DIRS = ("images", "labels")


class FetchError(MhyoloError):
    """A fetch that was refused or could not finish; nothing half-written is left in place."""


class Offline(FetchError):
    """An address of the manifest cannot be reached at all; the message says what to place by hand."""


# ------------------------------------------------------------------ manifest
@dataclass
class RemoteFile:
    url: str
    name: str  # file name inside the item's folder
    sha256: str
    bytes: int | None = None


@dataclass
class Item:
    name: str
    kind: str  # "files" | "archive"
    dest: str  # folder relative to the shared folder, e.g. "weights" or "data/seed_balls"
    licence: str = ""
    credit: str = ""
    files: list[RemoteFile] = field(default_factory=list)  # kind "files"
    # kind "archive"
    url: str = ""
    repository: str = ""
    commit: str = ""
    path: str = ""  # folder inside the repository ("" = its root)
    include: list[str] = field(default_factory=list)
    stems: str | None = None  # package file listing `folder/stem` of the images (and labels) kept
    move: list[tuple[str, str]] = field(default_factory=list)  # (regex, replacement) on the relative path
    write: dict[str, str] = field(default_factory=dict)  # small files not in the repository
    count: int = 0
    listing_sha256: str = ""

    def describe(self) -> str:
        if self.kind == "files":
            return ", ".join(f.url for f in self.files)
        where = f", folder {self.path}/" if self.path else ""
        return f"{self.repository} at commit {self.commit[:12]}{where}"


def load_manifest(path: str | Path | None = None) -> list[Item]:
    """The packaged manifest, or another file in the same form (a mirror, a test server)."""
    if path is None:
        text = resources.files("mhyolo.data").joinpath(MANIFEST).read_text(encoding="utf-8")
        base = None
    else:
        text = Path(path).read_text(encoding="utf-8")
        base = Path(path).parent
    raw = yaml.safe_load(text) or {}
    items = []
    for name, entry in (raw.get("items") or {}).items():
        entry = dict(entry)
        kind = entry.pop("kind")
        if kind not in ("files", "archive"):
            raise FetchError(f"{path or MANIFEST}: item '{name}': unknown kind '{kind}'")
        files = [RemoteFile(**f) for f in entry.pop("files", None) or []]
        move = [tuple(pair) for pair in entry.pop("move", None) or []]
        try:
            item = Item(name=name, kind=kind, files=files, move=move, **entry)
        except TypeError as exc:
            raise FetchError(f"{path or MANIFEST}: item '{name}': {exc}") from exc
        if item.stems and base is not None and not Path(item.stems).is_absolute():
            item.stems = str(base / item.stems)
        items.append(item)
    return items


def select_items(items: list[Item], only: Iterable[str] | None) -> list[Item]:
    if not only:
        return items
    names = {item.name for item in items}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise FetchError(f"unknown item(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    wanted = set(only)
    return [item for item in items if item.name in wanted]


def read_stems(item: Item) -> set[str]:
    assert item.stems
    path = Path(item.stems)
    if path.is_absolute():
        text = path.read_text(encoding="utf-8")
    else:
        text = resources.files("mhyolo.data").joinpath(item.stems).read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


# ------------------------------------------------------------------ hashing
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listing_digest(entries: dict[str, str]) -> str:
    """SHA-256 of the sorted `relpath sha256` lines (relpaths with `/`)."""
    text = "".join(f"{rel} {entries[rel]}\n" for rel in sorted(entries))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_listing(folder: Path) -> dict[str, str]:
    """relpath -> sha256 of every file under `folder` except the fetch's own SOURCE.md."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            if rel != SOURCE_NOTE:
                entries[rel] = sha256_file(path)
    return entries


# ------------------------------------------------------------------ selection
def _glob(pattern: str, rel: str) -> bool:
    """Glob on whole path segments: `*` never crosses a `/`."""
    parts, pats = rel.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats))


def safe_rel(rel: str) -> bool:
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts and "" not in rel.split("/")


def destination(item: Item, rel: str, stems: set[str] | None) -> str | None:
    """Where `rel` (a path inside the item's repository folder) goes in the item's folder, or None."""
    if not any(_glob(pattern, rel) for pattern in item.include):
        return None
    out = rel
    for pattern, replacement in item.move:
        if re.fullmatch(pattern, rel):
            out = re.sub(pattern, replacement, rel, count=1)
            break
    if stems is not None:
        parts = out.split("/")
        if len(parts) >= 2 and parts[-2] in IMAGE_DIRS:
            key = "/".join(parts[:-2] + [PurePosixPath(parts[-1]).stem])
            if key not in stems:
                return None
    if not safe_rel(out) or out == SOURCE_NOTE:
        return None
    return out
