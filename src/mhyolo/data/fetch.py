"""`mhyolo data fetch`: what `../shared` holds (the COCO weights, the sample photos, the ball
datasets), fetched from where it came from and checked against what this project was built on.

The manifest (`fetch_manifest.yaml`, shipped in the package) lists items of two kinds:

* `files`: single files at fixed addresses (the official `yolov5n.pt`), each with its SHA-256 and
  size; a file is renamed into place only once its hash matches.
* `archive`: a dataset inside a public repository at a pinned commit, fetched as that commit's
  tarball. The tarball itself is made on demand by the host, so its bytes carry no recorded hash;
  what is checked is the content: the files taken from it (a folder of the repository, narrowed by
  `include` globs, an optional list of kept image stems, folder moves and small written files) are
  hashed one by one, and the sorted `relpath sha256` listing must hash to the recorded
  `listing_sha256` with the recorded file count. That listing is computed the same way from the
  copies the project's figures were made with (`listing_digest`), so a fetched dataset is
  byte-for-byte that data or it is refused.

Everything lands atomically: downloads grow in `.part` files (resumed over HTTP `Range`), a dataset
is extracted into a hidden temporary folder beside its destination and renamed into place only after
the check; on a failed check the temporary folder and the download are removed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from mhyolo.data.download import Downloaded, DownloadError, Unreachable, download, part_path
from mhyolo.data.fetch_manifest import (DOWNLOADS, SOURCE_NOTE, FetchError, Item, Offline, destination,  # noqa: F401
                                        folder_listing, listing_digest, load_manifest, read_stems, safe_rel,
                                        select_items, sha256_file)


# ------------------------------------------------------------------ results
@dataclass
class Outcome:
    item: str
    status: str  # present | fetched | missing | differs | found
    where: Path
    detail: str = ""

    def line(self) -> str:
        text = f"{self.item}: {self.status} ({self.where})"
        return f"{text}: {self.detail}" if self.detail else text


def item_folder(item: Item, dest: Path) -> Path:
    return dest / item.dest


def is_found(item: Item, dest: Path) -> bool:
    """Present at all (no hashing): every file of a `files` item, a dataset folder with its data.yaml."""
    folder = item_folder(item, dest)
    if item.kind == "files":
        return all((folder / f.name).is_file() for f in item.files)
    return (folder / "data.yaml").is_file()


def check_item(item: Item, dest: Path) -> Outcome:
    """Compare what is at `dest` with the manifest: present (verified), missing or differs."""
    folder = item_folder(item, dest)
    if item.kind == "files":
        missing = [f.name for f in item.files if not (folder / f.name).is_file()]
        if len(missing) == len(item.files):
            return Outcome(item.name, "missing", folder)
        wrong = [f.name for f in item.files if f.name not in missing and sha256_file(folder / f.name) != f.sha256]
        if missing or wrong:
            detail = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                             f"SHA-256 differs: {', '.join(wrong)}" if wrong else ""]))
            return Outcome(item.name, "differs", folder, detail)
        return Outcome(item.name, "present", folder, f"{len(item.files)} file(s), SHA-256 checked")
    if not folder.is_dir():
        return Outcome(item.name, "missing", folder)
    entries = folder_listing(folder)
    if len(entries) == item.count and listing_digest(entries) == item.listing_sha256:
        return Outcome(item.name, "present", folder, f"{item.count} files, SHA-256 checked")
    return Outcome(item.name, "differs", folder,
                   f"{len(entries)} files (expected {item.count}), listing SHA-256 {listing_digest(entries)[:12]}… "
                   f"(expected {item.listing_sha256[:12]}…)")


# ------------------------------------------------------------------ fetching
def offline_message(item: Item, exc: Unreachable, dest: Path) -> str:
    if item.kind == "files":
        what = ", ".join(f.name for f in item.files)
        urls = ", ".join(f.url for f in item.files)
        how = f"download {what} elsewhere ({urls}) and copy it into {item_folder(item, dest)}"
    else:
        how = (f"copy the folder from a machine that has it (or from {item.repository}, commit {item.commit}, "
               f"folder {item.path or '/'}) to {item_folder(item, dest)}")
    return (f"{item.name}: cannot reach {exc.url} ({exc.reason}). Without internet, {how}; "
            f"or point MHYOLO_SHARED at a folder that has weights/ and data/ "
            f"(README, 'On a machine without ../shared')")


def fetch_item(item: Item, dest: Path, progress: bool = True, force: bool = False, keep_archive: bool = False,
               attempts: int = 4, wait: float = 2.0) -> Outcome:
    """Fetch one item into `dest` unless it is already there and verified. Something in the way that
    does not match the manifest is replaced only with `force`."""
    current = check_item(item, dest)
    if current.status == "present":
        return current
    if current.status == "differs" and not force and item.kind == "archive":
        raise FetchError(f"{item.name}: {current.where} exists but does not match the manifest ({current.detail}); "
                         f"move it away or pass --force to replace it")

    def get(url: str, target: Path, size: int | None, desc: str) -> Downloaded:
        return download(url, target, expected_bytes=size, progress=progress, attempts=attempts, wait=wait, desc=desc)

    try:
        if item.kind == "files":
            return _fetch_files(item, dest, get, force)
        return _fetch_archive(item, dest, get, progress, keep_archive)
    except Unreachable as exc:
        _prune_empty(item, dest)
        raise Offline(offline_message(item, exc, dest)) from exc
    except DownloadError as exc:
        raise FetchError(f"{item.name}: {exc}") from exc
    except FetchError:
        _prune_empty(item, dest)
        raise


def _fetch_files(item: Item, dest: Path, get: Callable[..., Downloaded], force: bool) -> Outcome:
    folder = item_folder(item, dest)
    fetched = 0
    for remote in item.files:
        target = folder / remote.name
        if target.is_file():
            if sha256_file(target) == remote.sha256:
                continue
            if not force:
                raise FetchError(f"{item.name}: {target} exists but its SHA-256 is not the recorded {remote.sha256}; "
                                 f"move it away or pass --force to replace it")
        staging = folder / f".{remote.name}.fetch"  # renamed to `target` only once its hash matches
        for fresh_try in (False, True):
            if fresh_try:
                part_path(staging).unlink(missing_ok=True)
            got = get(remote.url, staging, remote.bytes, remote.name)
            digest = sha256_file(staging)
            if digest == remote.sha256:
                break
            staging.unlink()
            if not got.resumed:
                break
            # joined from two answers that do not fit together: once more from the start
        if not staging.is_file():
            raise FetchError(f"{item.name}: {remote.url} gave a file whose SHA-256 is {digest}, "
                             f"not the recorded {remote.sha256}; nothing was kept")
        os.replace(staging, target)
        fetched += 1
    return Outcome(item.name, "fetched", folder, f"{fetched} of {len(item.files)} file(s) downloaded, SHA-256 checked")


def _fetch_archive(item: Item, dest: Path, get: Callable[..., Downloaded], progress: bool,
                   keep_archive: bool) -> Outcome:
    folder = item_folder(item, dest)
    downloads = dest / DOWNLOADS
    archive = downloads / f"{item.name}-{item.commit[:12] or 'archive'}.tar.gz"
    if not archive.is_file():
        get(item.url, archive, None, f"{item.name} (archive)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".fetch", dir=folder.parent))
    try:
        entries = _extract(item, archive, staging, progress)
        if len(entries) != item.count or listing_digest(entries) != item.listing_sha256:
            raise FetchError(
                f"{item.name}: the files taken from {item.url} do not match the manifest: {len(entries)} files "
                f"(expected {item.count}), listing SHA-256 {listing_digest(entries)} "
                f"(expected {item.listing_sha256}); nothing was kept")
        (staging / SOURCE_NOTE).write_text(source_note(item), encoding="utf-8")
        _replace_folder(staging, folder)
    except FetchError:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)  # a refused archive is never reused
        _remove_if_empty(downloads)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # interrupted: the complete archive stays for the next run
        raise
    if not keep_archive:
        archive.unlink(missing_ok=True)
        _remove_if_empty(downloads)
    return Outcome(item.name, "fetched", folder, f"{item.count} files, SHA-256 checked")


def _extract(item: Item, archive: Path, staging: Path, progress: bool) -> dict[str, str]:
    """Write the item's files from the tarball into `staging`; relpath -> sha256 (written files too)."""
    from tqdm import tqdm

    stems = read_stems(item) if item.stems else None
    prefix = item.path.strip("/")
    entries: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(desc=f"{item.name} (extract)", unit="file",
                                                       disable=not progress, leave=False) as bar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.split("/", 1)  # the tarball's own top folder (REPO-COMMIT/)
                if len(parts) < 2:
                    continue
                rel = parts[1]
                if prefix:
                    if not rel.startswith(prefix + "/"):
                        continue
                    rel = rel[len(prefix) + 1:]
                out = destination(item, rel, stems)
                if out is None:
                    continue
                if out in entries:
                    raise FetchError(f"{item.name}: two files of the archive map to {out}")
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = staging / out
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with source, open(target, "wb") as f:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        f.write(block)
                entries[out] = digest.hexdigest()
                bar.update(1)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FetchError(f"{item.name}: {archive.name} is not a readable tar.gz archive ({exc}); "
                         f"nothing was kept") from exc
    for rel, text in item.write.items():
        if not safe_rel(rel):
            raise FetchError(f"{item.name}: unsafe path in write: {rel}")
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        target.write_bytes(data)
        entries[rel] = hashlib.sha256(data).hexdigest()
    return entries


def _replace_folder(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`; an existing `folder` (only with --force) is moved aside first."""
    if folder.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, aside / folder.name)
        os.replace(staging, folder)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, folder)


def _prune_empty(item: Item, dest: Path) -> None:
    """Remove the folders a failed fetch of `item` created and left empty (never `dest` itself)."""
    folder = item_folder(item, dest)
    for candidate in [dest / DOWNLOADS, folder, *folder.parents]:
        if candidate == dest or dest not in candidate.parents:
            continue
        _remove_if_empty(candidate)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def source_note(item: Item) -> str:
    lines = [f"# {item.name}", "", "Fetched by `mhyolo data fetch` and checked against the project's manifest.", ""]
    if item.repository:
        lines.append(f"- Repository: {item.repository}, commit {item.commit}, path {item.path or '/'}")
    lines.append(f"- Archive: {item.url}")
    lines.append(f"- Content: {item.count} files; SHA-256 of the sorted `relpath sha256` listing: "
                 f"{item.listing_sha256}")
    if item.licence:
        lines.append(f"- Licence: {item.licence}")
    if item.credit:
        lines.append(f"- Credit: {item.credit}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the command's work
def fetch(dest: Path, only: Iterable[str] | None = None, manifest: str | Path | None = None, progress: bool = True,
          force: bool = False, keep_archives: bool = False, if_missing: bool = False, check_only: bool = False,
          report: Callable[[str], Any] = print, attempts: int = 4, wait: float = 2.0) -> list[Outcome]:
    """Fetch (or with `check_only`, only check) the manifest's items into `dest`; each item's outcome
    is reported as one line. An item that fails does not stop the others (the failures are raised
    together at the end), except when an address cannot be reached at all (offline): then that
    message is raised at once.

    `if_missing`: an item found at `dest` at all (`is_found`) is left alone without hashing, so the
    call costs nothing where the data is already in place (`make demo`)."""
    items = select_items(load_manifest(manifest), only)
    outcomes, failures = [], []
    for item in items:
        if if_missing and is_found(item, dest):
            outcomes.append(Outcome(item.name, "found", item_folder(item, dest)))
            continue  # quietly: the caller sums these up
        if check_only:
            outcome = check_item(item, dest)
        else:
            try:
                outcome = fetch_item(item, dest, progress=progress, force=force, keep_archive=keep_archives,
                                     attempts=attempts, wait=wait)
            except Offline:
                raise
            except FetchError as exc:
                failures.append(exc)
                continue
        report(outcome.line())
        outcomes.append(outcome)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise FetchError(f"{len(failures)} items not fetched: " + " | ".join(str(exc) for exc in failures))
    return outcomes
