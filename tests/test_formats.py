"""The file-format table (`mhyolo.deploy.formats`): one row per format, read by every command."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mhyolo.deploy import formats
from mhyolo.deploy.formats import FileFormat, LoadOptions, file_size_mb, register_format, unregister_format
from mhyolo.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"


def test_keys_aliases_and_suffixes_are_unique() -> None:
    names = [n for row in formats.FORMATS.values() for n in (row.key, *row.aliases)]
    suffixes = [s for row in formats.FORMATS.values() for s in row.suffixes]
    assert len(names) == len(set(names)) and len(suffixes) == len(set(suffixes))
    assert all(s.startswith(".") and s == s.lower() for s in suffixes)
    assert sum(row.fallback for row in formats.FORMATS.values()) == 1
    with pytest.raises(ValueError, match="registered twice"):
        register_format(FileFormat("onnx", "again", (".onnx2",), lambda w, o: None))
    with pytest.raises(ValueError, match="already 'openvino'"):
        register_format(FileFormat("other", "other", (".xml",), lambda w, o: None))


def test_the_names_commands_offer_are_today_s() -> None:
    from mhyolo.bench.formats import FORMATS as BENCH
    from mhyolo.commands.quantize import BACKENDS
    from mhyolo.deploy.export import EXPORT_FORMATS
    from mhyolo.runtime.load import RUNTIMES

    assert EXPORT_FORMATS == ("onnx", "openvino")
    assert BACKENDS == ("ort", "openvino", "rknn")
    assert RUNTIMES == ("onnxruntime", "openvino")
    assert list(BENCH) == ["torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8",
                           "openvino-int8-acc", "rknn-int8"]
    assert all(row.file_format in formats.FORMATS for row in BENCH.values())
    assert formats.file_format("ort") is formats.file_format("onnx")  # the quantizer's name is an alias
    assert {name: row.suffixes[0] for name, row in formats.quantizers().items()} == {
        "ort": ".onnx", "openvino": ".xml", "rknn": ".rknn"}


def test_load_backend_dispatches_through_the_table(tmp_path: Path) -> None:
    from mhyolo.runtime.load import load_backend

    calls = []

    def loader(weights, options: LoadOptions):
        calls.append((Path(weights), options))
        return "fake backend"

    register_format(FileFormat("fake", "Fake", (".fake",), loader))
    try:
        model = tmp_path / "model.FAKE"  # the suffix matches in any case
        model.write_bytes(b"x")
        assert load_backend(model, threads=3, precision="f32") == "fake backend"
        assert calls == [(model, LoadOptions(device="cpu", precision="f32", threads=3))]
    finally:
        unregister_format("fake")
    assert "fake" not in formats.FORMATS
    assert formats.format_of_file(model).key == "torch"  # gone: back to the fallback row


def test_runtime_choice_follows_the_rows(tmp_path: Path) -> None:
    from mhyolo.runtime.load import load_backend

    with pytest.raises(ConfigError, match="runtime must be one of onnxruntime, openvino, got 'tensorrt'"):
        load_backend(tmp_path / "m.onnx", runtime="tensorrt")
    with pytest.raises(ConfigError, match=r"runtime 'openvino' needs an exported \.onnx or \.xml model"):
        load_backend(tmp_path / "m.safetensors", runtime="openvino")
    calls = []
    row = formats.FORMATS["openvino"]
    formats.FORMATS["openvino"] = dataclasses.replace(row, load=lambda w, o: calls.append(o.precision))
    try:
        load_backend(tmp_path / "m.onnx", runtime="openvino", precision="bf16")  # OpenVINO runs an .onnx too
    finally:
        formats.FORMATS["openvino"] = row
    assert calls == ["bf16"]


def test_the_size_counts_an_ir_s_bin(tmp_path: Path) -> None:
    xml, onnx = tmp_path / "model.xml", tmp_path / "model.onnx"
    xml.write_bytes(b"x" * 1000)
    (tmp_path / "model.bin").write_bytes(b"x" * 250_000)
    onnx.write_bytes(b"x" * 2000)
    assert file_size_mb(xml) == pytest.approx(0.251)
    assert file_size_mb(onnx) == pytest.approx(0.002)  # an .onnx has no companions: the .bin is not its


def test_the_input_size_error_names_the_file() -> None:
    class Exported:
        path = Path("runs/export/ball.onnx")
        imgsz = 320

    formats.check_input_size(Exported(), 320)
    formats.check_input_size(Exported(), None)
    formats.check_input_size(object(), 640)  # takes any size
    with pytest.raises(ConfigError, match=r"^runs/export/ball\.onnx was exported for --imgsz 320, not 640: "
                                          r"drop --imgsz or export again at 640$"):
        formats.check_input_size(Exported(), 640)
    from mhyolo.runtime.load import input_size

    with pytest.raises(ConfigError, match=r"ball\.onnx was exported for --imgsz 320, not 640"):
        input_size(Exported(), 640)
    from mhyolo.bench.formats import check_input_size

    with pytest.raises(ConfigError, match=r"ball\.onnx was made for --imgsz 320, not 640: delete it"):
        check_input_size(Exported(), 640)


def test_throughput_modes_come_from_the_backend_classes() -> None:
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend
    from mhyolo.infer.stream import OpenVinoRequests, ThreadedCalls

    ort, ov = object.__new__(OnnxRuntimeBackend), object.__new__(OpenVinoBackend)
    assert ThreadedCalls.applies(ort) and not OpenVinoRequests.applies(ort)
    assert OpenVinoRequests.applies(ov) and not ThreadedCalls.applies(ov)
    assert not ThreadedCalls.applies(object()) and not OpenVinoRequests.applies(object())


def test_the_table_imports_no_runtime() -> None:
    code = ("import sys; import mhyolo.deploy.formats; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.stdout.strip() == "[]"
