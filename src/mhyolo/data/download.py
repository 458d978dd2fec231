"""One HTTP download that survives interruptions: bytes go to `TARGET.part`, a later request asks
for the rest (HTTP `Range`), and only a complete file is renamed to `TARGET`.

Standard library only (urllib); a tqdm bar shows the bytes. A server that ignores `Range` (answers
200) restarts the file from zero, so a resumed file is never a mix of two answers. An address that
cannot be reached at all (no route, refused, DNS) raises `Unreachable` at once: the caller turns it
into one line saying what to place by hand. A transfer cut half-way is retried from where it stopped.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mhyolo.errors import MhyoloError

CHUNK = 1 << 16
USER_AGENT = "mhyolo-fetch"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(MhyoloError):
    """A download that did not finish (the partial file is kept for the next try)."""


class Unreachable(DownloadError):
    """The address cannot be reached at all (offline, refused, unknown host)."""

    def __init__(self, url: str, reason: object) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url} ({reason})")


@dataclass
class Downloaded:
    path: Path
    bytes: int
    resumed: bool  # the file joins bytes of more than one answer (HTTP Range)
    requests: int


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def download(url: str, target: str | Path, expected_bytes: int | None = None, progress: bool = True,
             attempts: int = 4, timeout: float = 60.0, wait: float = 2.0, desc: str | None = None) -> Downloaded:
    """`url` saved as `target` (renamed from `target.part` once complete), resuming an existing
    `.part`. Up to `attempts` requests when the transfer is cut; `wait` seconds between them."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    requests = 0
    last_error: BaseException | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(wait)
        requests += 1
        try:
            done, started_at = _transfer(url, part, expected_bytes, progress, timeout, desc or target.name)
        except Unreachable:
            if attempt == 0:
                raise  # nothing came through: offline, not a cut transfer
            last_error = DownloadError(f"connection to {url} lost")
            continue
        except (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError,
                urllib.error.URLError) as exc:
            last_error = exc
            continue
        if done:
            os.replace(part, target)
            return Downloaded(target, target.stat().st_size, started_at > 0, requests)
        last_error = DownloadError("the server closed the connection early")
    have = part.stat().st_size if part.is_file() else 0
    raise DownloadError(f"download of {url} stopped after {have} bytes ({last_error}); "
                        f"run the command again to resume from {part}")


def _transfer(url: str, part: Path, expected: int | None, progress: bool, timeout: float,
              desc: str) -> tuple[bool, int]:
    """One request: (`part` now holds the whole file, the byte offset this answer's bytes start at)."""
    offset = part.stat().st_size if part.is_file() else 0
    if expected is not None and offset > expected:
        part.unlink()
        offset = 0
    if expected is not None and offset == expected:
        return True, offset
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (addresses from the manifest)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked past the end: the part is whole, or stale
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            exc.close()
            if total == offset:
                return True, offset
            part.unlink()  # stale: start over
            return False, 0
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise Unreachable(url, exc.reason) from exc
    except (ConnectionError, socket.timeout, TimeoutError) as exc:
        raise Unreachable(url, exc) from exc
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        if status == 206:
            start, total = _range_start_total(response.headers.get("Content-Range"))
            if start != offset:  # not the piece asked for: start over
                part.unlink(missing_ok=True)
                return False, 0
        else:  # 200: the whole file, whatever was asked
            offset, total = 0, None
        if total is None and length is not None and length.isdigit():
            total = offset + int(length)
        if total is None:
            total = expected
        mode = "ab" if offset else "wb"
        with open(part, mode) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                           unit_divisor=1024, desc=desc, disable=not progress, leave=False) as bar:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None:
        return size >= total, offset
    return True, offset  # no length given: the end of the stream is the end of the file


def _range_start_total(header: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.match(header or "")
    if not match:
        return None, None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _total_from_content_range(header: str | None) -> int | None:
    match = re.match(r"bytes\s+\*/(\d+)", header or "")
    return int(match.group(1)) if match else None
