"""`mhyolo data fetch` against a local HTTP server on 127.0.0.1: the right files land, a wrong
SHA-256 is refused with nothing half-written kept, an interrupted download resumes with a Range
request, an unreachable address gives one clear line; and the packaged manifest matches ../shared."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from mhyolo.cli import main
from mhyolo.data.fetch import FetchError, Offline, fetch, load_manifest
from mhyolo.paths import fetch_destination, shared_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ------------------------------------------------------------------ a small server
@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the next answer breaks off
    ranges: bool = True  # honour Range requests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state = self.state
        rng = self.headers.get("Range")
        state.log.append((self.path, rng))
        body = state.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and state.ranges:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        piece = body[start:]
        cut = state.cut.pop(self.path, None)
        if cut is not None:  # announce the whole length, send part of it, hang up
            self.wfile.write(piece[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(piece)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state, base
    httpd.shutdown()
    httpd.server_close()


# ------------------------------------------------------------------ a small dataset and its manifest
def _dataset() -> dict[str, bytes]:
    """Files of the toy dataset as they must land (relative to its folder)."""
    files = {"data.yaml": b"train: train/images\nval: valid/images\nnc: 1\nnames: [ball]\n"}
    for split, n in (("train", 4), ("valid", 2)):
        for i in range(n):
            files[f"{split}/images/img{i}.jpg"] = hashlib.sha256(f"{split}{i}".encode()).digest() * 300
            files[f"{split}/labels/img{i}.txt"] = f"0 0.5 0.5 0.{i + 1} 0.{i + 1}\n".encode()
    return files


def _tarball(files: dict[str, bytes]) -> bytes:
    """A repository tarball as the host makes it: one top folder, the dataset under ds/, and files
    that must not be taken (a cache beside the labels, a file outside the folder)."""
    members = {f"toy-{COMMIT}/ds/{rel}": data for rel, data in files.items()}
    members[f"toy-{COMMIT}/ds/train/labels.cache"] = b"cache"
    members[f"toy-{COMMIT}/README.md"] = b"# toy\n"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _listing_sha256(files: dict[str, bytes]) -> str:
    lines = "".join(f"{rel} {hashlib.sha256(files[rel]).hexdigest()}\n" for rel in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


WEIGHTS = bytes(range(256)) * 400  # 102400 bytes


def _manifest(tmp_path: Path, base: str, weights_sha: str | None = None, listing: str | None = None,
              files: dict[str, bytes] | None = None) -> Path:
    files = files or _dataset()
    manifest = {"items": {
        "toyweights": {"kind": "files", "dest": "weights", "licence": "test",
                       "files": [{"url": f"{base}/w.pt", "name": "w.pt",
                                  "sha256": weights_sha or hashlib.sha256(WEIGHTS).hexdigest(),
                                  "bytes": len(WEIGHTS)}]},
        "toy": {"kind": "archive", "dest": "data/toy", "repository": "https://example.invalid/toy",
                "commit": COMMIT, "url": f"{base}/toy.tar.gz", "path": "ds",
                "include": ["data.yaml", "*/images/*", "*/labels/*.txt"], "count": len(files),
                "listing_sha256": listing or _listing_sha256(files), "licence": "CC BY 4.0", "credit": "toy set"},
    }}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def _serve(state: ServerState) -> None:
    state.files["/w.pt"] = WEIGHTS
    state.files["/toy.tar.gz"] = _tarball(_dataset())


def _all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _run(dest: Path, manifest: Path, **kwargs):
    lines: list[str] = []
    kwargs.setdefault("wait", 0.0)
    outcomes = fetch(dest, manifest=manifest, progress=False, report=lines.append, **kwargs)
    return outcomes, lines


# ------------------------------------------------------------------ tests
def test_files_land_and_verify_then_are_skipped(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    outcomes, lines = _run(dest, manifest)
    assert [o.status for o in outcomes] == ["fetched", "fetched"], lines
    assert (dest / "weights" / "w.pt").read_bytes() == WEIGHTS
    expected = _dataset()
    landed = _all_files(dest / "data" / "toy")
    assert landed == sorted([*expected, "SOURCE.md"])  # the cache and the file outside ds/ are not taken
    for rel, data in expected.items():
        assert (dest / "data" / "toy" / rel).read_bytes() == data
    source = (dest / "data" / "toy" / "SOURCE.md").read_text()
    assert COMMIT in source and "CC BY 4.0" in source
    assert not (dest / ".downloads").exists()  # the archive is removed once extracted
    assert not [p for p in dest.rglob(".*")]  # no temporary files or folders left
    requests = len(state.log)

    outcomes, _ = _run(dest, manifest)  # in place and verified: skipped, nothing requested
    assert [o.status for o in outcomes] == ["present", "present"]
    assert len(state.log) == requests


def test_wrong_weights_sha256_is_refused_and_nothing_is_kept(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base, weights_sha="0" * 64)
    dest = tmp_path / "shared"
    with pytest.raises(FetchError, match="SHA-256"):
        _run(dest, manifest, only=["toyweights"])
    assert _all_files(dest) == []
    assert not (dest / "weights").exists()


def test_wrong_listing_sha256_is_refused_and_nothing_is_kept(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base, listing="f" * 64)
    dest = tmp_path / "shared"
    with pytest.raises(FetchError, match="do not match the manifest"):
        _run(dest, manifest, only=["toy"])
    assert _all_files(dest) == []  # no dataset, no half-extracted folder, no archive or .part
    assert not (dest / "data" / "toy").exists()
    assert [("/toy.tar.gz", None)] == state.log


def test_one_changed_file_in_the_archive_is_refused(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    changed = dict(_dataset())
    changed["train/labels/img0.txt"] = b"0 0.4 0.5 0.1 0.1\n"
    state.files["/toy.tar.gz"] = _tarball(changed)
    manifest = _manifest(tmp_path, base)  # the listing of the original files
    dest = tmp_path / "shared"
    with pytest.raises(FetchError):
        _run(dest, manifest, only=["toy"])
    assert _all_files(dest) == []


def test_an_unreadable_archive_is_refused(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    state.files["/toy.tar.gz"] = b"<html>not a tarball</html>"
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    with pytest.raises(FetchError, match="not a readable tar.gz"):
        _run(dest, manifest, only=["toy"])
    assert _all_files(dest) == []


def test_an_existing_different_folder_is_kept_unless_forced(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    (dest / "data" / "toy").mkdir(parents=True)
    (dest / "data" / "toy" / "data.yaml").write_text("mine\n")
    with pytest.raises(FetchError, match="--force"):
        _run(dest, manifest, only=["toy"])
    assert (dest / "data" / "toy" / "data.yaml").read_text() == "mine\n"
    outcomes, _ = _run(dest, manifest, only=["toy"], force=True)
    assert outcomes[0].status == "fetched"
    assert (dest / "data" / "toy" / "data.yaml").read_bytes() == _dataset()["data.yaml"]


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    state.cut["/w.pt"] = 30000
    outcomes, _ = _run(dest, manifest, only=["toyweights"], attempts=3)
    assert outcomes[0].status == "fetched"
    assert state.log == [("/w.pt", None), ("/w.pt", "bytes=30000-")]
    assert (dest / "weights" / "w.pt").read_bytes() == WEIGHTS
    assert _all_files(dest) == ["weights/w.pt"]


def test_an_interrupted_archive_resumes_on_the_next_run(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    archive = state.files["/toy.tar.gz"]
    state.cut["/toy.tar.gz"] = len(archive) // 2
    with pytest.raises(FetchError, match="resume"):
        _run(dest, manifest, only=["toy"], attempts=1)
    parts = list((dest / ".downloads").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == len(archive) // 2  # kept for the next run
    assert not (dest / "data" / "toy").exists()

    outcomes, _ = _run(dest, manifest, only=["toy"])
    assert outcomes[0].status == "fetched"
    assert state.log[-1] == ("/toy.tar.gz", f"bytes={len(archive) // 2}-")
    assert (dest / "data" / "toy" / "train" / "images" / "img3.jpg").read_bytes() == _dataset()["train/images/img3.jpg"]
    assert not (dest / ".downloads").exists()


def test_a_server_ignoring_range_restarts_from_zero(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    state.ranges = False
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    state.cut["/w.pt"] = 1000
    outcomes, _ = _run(dest, manifest, only=["toyweights"], attempts=3)
    assert outcomes[0].status == "fetched"
    assert state.log == [("/w.pt", None), ("/w.pt", "bytes=1000-")]  # answered 200: the whole file again
    assert (dest / "weights" / "w.pt").read_bytes() == WEIGHTS  # not 1000 bytes + the whole file


def test_a_stale_partial_file_is_downloaded_again(server, tmp_path: Path) -> None:
    state, base = server
    _serve(state)
    manifest = _manifest(tmp_path, base)
    dest = tmp_path / "shared"
    (dest / "weights").mkdir(parents=True)
    (dest / "weights" / ".w.pt.fetch.part").write_bytes(b"x" * 5000)  # left by a run against other bytes
    outcomes, _ = _run(dest, manifest, only=["toyweights"])
    assert outcomes[0].status == "fetched"
    assert state.log == [("/w.pt", "bytes=5000-"), ("/w.pt", None)]  # resumed, refused by hash, fetched anew
    assert (dest / "weights" / "w.pt").read_bytes() == WEIGHTS
    assert _all_files(dest) == ["weights/w.pt"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_gives_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    dest = tmp_path / "shared"
    with pytest.raises(Offline, match="cannot reach"):
        _run(dest, manifest)
    assert _all_files(dest) == [] and not (dest / "weights").exists()

    rc = main(["data", "fetch", "--manifest", str(manifest), "--dest", str(dest), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert "cannot reach http://127.0.0.1" in err and "Without internet" in err and str(dest / "weights") in err


def test_if_missing_and_check_need_no_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    dest = tmp_path / "shared"
    (dest / "weights").mkdir(parents=True)
    (dest / "weights" / "w.pt").write_bytes(WEIGHTS)
    (dest / "data" / "toy").mkdir(parents=True)
    for rel, data in _dataset().items():
        (dest / "data" / "toy" / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / "data" / "toy" / rel).write_bytes(data)
    assert main(["data", "fetch", "--manifest", str(manifest), "--dest", str(dest), "--if-missing"]) == 0
    assert "nothing fetched" in capsys.readouterr().out
    assert main(["data", "fetch", "--manifest", str(manifest), "--dest", str(dest), "--check"]) == 0
    (dest / "data" / "toy" / "valid" / "labels" / "img1.txt").write_text("0 0.5 0.5 0.9 0.9\n")
    assert main(["data", "fetch", "--manifest", str(manifest), "--dest", str(dest), "--check"]) == 1
    assert "toy: differs" in capsys.readouterr().out


def test_fetched_shared_folder_is_where_mhyolo_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MHYOLO_SHARED", raising=False)
    monkeypatch.setenv("MHYOLO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("mhyolo.paths.repo_root", lambda: tmp_path / "checkout")
    assert fetch_destination() == tmp_path / "home" / "shared"  # no ../shared: fetch into the cache
    assert shared_dir() == tmp_path / "shared"  # nothing anywhere: the usual place is named
    (tmp_path / "home" / "shared").mkdir(parents=True)
    assert shared_dir() == tmp_path / "home" / "shared"  # fetched data is found
    (tmp_path / "shared").mkdir()
    assert shared_dir() == tmp_path / "shared" == fetch_destination()  # ../shared wins when present


@pytest.mark.slow
def test_packaged_manifest_matches_the_shared_data(shared: Path) -> None:
    """The recorded SHA-256 are those of the copies this project was built on."""
    from mhyolo.data.fetch import check_item

    items = load_manifest()
    assert {item.name for item in items} >= {"yolov5n", "seed_balls", "tennis_icifx", "basketball_f2rlv",
                                              "football_worldcup", "football_broadcast"}
    for item in items:
        if item.kind == "archive":
            assert item.url.endswith(item.commit) and item.repository.rsplit("/", 1)[-1] in item.url
        outcome = check_item(item, shared)
        assert outcome.status == "present", outcome.line()
