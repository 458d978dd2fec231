"""Safe import of official checkpoints, safetensors round trips, weights resolution."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from mhyolo.cli import main
from mhyolo.errors import UnsafePickleError, WeightsError
from mhyolo.model.weights import (
    import_official,
    load_checkpoint,
    load_model,
    model_from_official,
    resolve_weights,
    save_checkpoint,
)
from mhyolo.model.yolo import build_model


def _torch_zip(path: Path, payload: bytes) -> Path:
    """A file laid out like a torch checkpoint archive around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return path


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_official_weights_load_strict(official_weights: Path) -> None:
    imported = import_official(official_weights)
    assert len(imported.state_dict) == 349
    assert imported.names[0] == "person" and len(imported.names) == 80
    model = model_from_official(imported)  # load_state_dict(strict=True) inside
    assert model.detect.anchors_px[0].tolist() == [[10, 13], [16, 30], [33, 23]]
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())


def test_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _torch_zip(tmp_path / "evil.pt", pickle.dumps({"model": _RunsShell(f"touch {marker}")}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        import_official(path)
    assert not marker.exists()
    # the CLI reports it as one line and a non-zero exit, without running it either
    assert main(["import-weights", str(path), "-o", str(tmp_path / "out.safetensors")]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load")])
def test_other_dangerous_globals_are_named(tmp_path: Path, target: tuple[str, str]) -> None:
    module, name = target
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x00x\x85R."
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        import_official(_torch_zip(tmp_path / "bad.pt", payload))


def test_zero_byte_and_truncated_checkpoints_give_clear_errors(tmp_path: Path, official_weights: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_model(empty)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(official_weights.read_bytes()[: 1_000_000])
    with pytest.raises(WeightsError, match="truncated"):
        load_model(truncated)


def test_truncated_safetensors_gives_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("yolov5n", nc=1, names=["ball"]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(path)


def test_safetensors_round_trip_gives_identical_outputs(tmp_path: Path, official_weights: Path) -> None:
    original = load_model(official_weights)
    out = tmp_path / "yolov5n.safetensors"
    assert main(["import-weights", str(official_weights), "-o", str(out)]) == 0
    restored = load_checkpoint(out)
    assert restored.metadata["names"] == original.names
    assert restored.metadata["strides"] == [8.0, 16.0, 32.0]
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = original.predict(x)["detection"]
        b = restored.model.eval().predict(x)["detection"]
    assert torch.equal(a, b)


def test_extra_tensors_and_metadata_survive(tmp_path: Path) -> None:
    model = build_model("yolov5n", nc=1, names=["ball"])
    extra = {"optimizer/0/momentum": torch.arange(4.0)}
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"epoch": 3}, extra=extra)
    loaded = load_checkpoint(path)
    assert loaded.metadata["epoch"] == 3 and loaded.model.names == ["ball"]
    assert torch.equal(loaded.extra["optimizer/0/momentum"], extra["optimizer/0/momentum"])
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp files


def test_resolution_order_and_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, official_weights: Path) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MHYOLO_HOME", str(cache))
    monkeypatch.setenv("MHYOLO_SHARED", str(official_weights.parent.parent))
    assert resolve_weights("yolov5n.pt") == official_weights  # falls through to ../shared/weights
    cache.mkdir()
    (cache / "yolov5n.pt").write_bytes(b"cached")
    assert resolve_weights("yolov5n.pt") == cache / "yolov5n.pt"  # the cache comes first
    monkeypatch.setenv("MHYOLO_SHARED", str(tmp_path / "nowhere"))

    def offline(*_args, **_kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(WeightsError) as info:
        resolve_weights("yolov5s.pt")
    message = str(info.value)
    assert "https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5s.pt" in message
    assert str(cache) in message
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(tmp_path / "missing" / "x.pt")
