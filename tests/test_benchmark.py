"""`mhyolo benchmark` on a tiny real set: one row per format, the same mAP from PyTorch and
ONNX Runtime FP32, a failing producer turned into a "skipped" row, the files written and
the change-vs-FP32 columns checked by hand.

The models are YOLOv5n with the official weights, their detector cut down to the COCO
"sports ball" class so that they find the seed balls (the type head stays random).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.models import sports_ball_model
from helpers.tiny_data import tiny_ball_dataset

from mhyolo.bench import formats as bench_formats
from mhyolo.bench.report import ACCURACY_KEYS, Row, add_deltas, head_overhead
from mhyolo.bench.timing import Timing, blocked_times, interleaved_times, percentile
from mhyolo.cli import main

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")

TYPEHEAD_CFG = "yolov5n-typehead"
IMGSZ = 160
FORMATS = ["torch", "onnx", "openvino", "onnx-int8"]
FAILING = "openvino"  # its producer is made to raise
MD_HEADER = ("| format | file | MB | model ms | model p90 | end-to-end ms | e2e p90 | outside model "
             "| frames/s (stream) | mAP50 | Δ | mAP50-95 | Δ | type acc | Δ | typed mAP50 | Δ | note |")


@pytest.fixture(scope="module")
def bench(shared: Path, official_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """One CLI run: the type-head model in FORMATS plus the detector, FAILING's producer raising."""
    from mhyolo.model.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("bench")
    data = tiny_ball_dataset(shared, folder / "data", per_type_train=2, per_type_val=2)
    weights = save_checkpoint(folder / "typehead.safetensors", sports_ball_model(official_weights, TYPEHEAD_CFG))
    detector = save_checkpoint(folder / "detector.safetensors", sports_ball_model(official_weights))

    def broken(files):
        raise RuntimeError("converter crashed on purpose")

    out = folder / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(bench_formats.FORMATS, FAILING,
                      dataclasses.replace(bench_formats.FORMATS[FAILING], produce=broken))
        code = main(["benchmark", "--weights", str(weights), "--data", str(data), "--imgsz", str(IMGSZ),
                     "--out", str(out), "--formats", *FORMATS, "--runs", "2", "--warmup", "1", "--threads", "1",
                     "--calib-images", "4", "--detector", str(detector), "--quiet"])
    assert code == 0
    report = json.loads((out / "benchmark.json").read_text())
    return out, report, {row["id"]: row for row in report["rows"]}


def test_one_row_per_format_with_the_documented_columns(bench):
    out, report, rows = bench
    assert [r["id"] for r in report["rows"]] == FORMATS + ["detector/torch", "detector/onnx"]
    columns = {"file", "size_mb", "latency_median_ms", "latency_p90_ms", "e2e_median_ms", "e2e_p90_ms", "outside_model",
               "frames_per_s", "throughput_mode", *ACCURACY_KEYS, "delta", "status", "reason"}
    for row in report["rows"]:
        assert columns <= set(row), row["id"]
    text = (out / "benchmark.md").read_text()
    assert MD_HEADER in text
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| format")]
    assert len(table) == len(rows)
    assert report["settings"]["threads"] == 1 and report["settings"]["runs"] == 2
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    for row in ok:
        assert row["size_mb"] > 1.0 and row["latency_p90_ms"] >= row["latency_median_ms"] > 0
        assert row["e2e_p90_ms"] >= row["e2e_median_ms"] > 0 and 0.0 <= row["outside_model"] < 1.0
        assert row["outside_model"] == pytest.approx(max(0.0, 1 - row["latency_median_ms"] / row["e2e_median_ms"]))
        assert row["frames_per_s"] > 0 and row["throughput_mode"] == "2 threads", row["id"]  # ORT and PyTorch
        assert f"({row['throughput_mode']}) |" in table[report["rows"].index(row)]
    # the real images timed end to end and in throughput mode: the first of the val split
    frames = report["settings"]["frames"]
    assert len(frames) == 6 and all(Path(f).is_file() for f in frames)  # the tiny set's val split holds 6
    assert f"one real image ({Path(frames[0]).name})" in text and "6 images end to end" in text
    assert rows["torch"]["cls_accuracy"] is not None and rows["torch"]["typed_map50"] is not None
    assert rows["detector/torch"]["cls_accuracy"] is None  # no type head
    assert rows["torch"]["map50"] > 0.1, "the sports-ball detector should find some seed balls"


def test_pytorch_and_onnxruntime_fp32_score_the_same(bench):
    _, _, rows = bench
    for prefix in ("", "detector/"):
        torch_row, onnx_row = rows[f"{prefix}torch"], rows[f"{prefix}onnx"]
        for key in ACCURACY_KEYS:
            if torch_row[key] is None:
                assert onnx_row[key] is None
            else:
                assert onnx_row[key] == pytest.approx(torch_row[key], abs=1e-6), (prefix, key)


def test_a_failing_producer_is_a_skipped_row_and_the_others_complete(bench):
    out, _, rows = bench
    failed = rows[FAILING]
    assert failed["status"] == "skipped"
    assert failed["reason"] == "produce: RuntimeError: converter crashed on purpose"
    assert failed["map50"] is None and failed["latency_median_ms"] is None
    assert "skipped: produce: RuntimeError: converter crashed on purpose" in (out / "benchmark.md").read_text()
    others = [r for key, r in rows.items() if key != FAILING]
    for row in others:
        if row["format"] == "onnx-int8" and row["status"] != "ok":
            pytest.fail(f"ONNX Runtime INT8 did not complete: {row['reason']}")
        assert row["status"] == "ok", row
    assert (out / "typehead_int8.onnx").is_file() and (out / "detector" / "detector.onnx").is_file()


def test_reports_are_written(bench):
    out, report, _ = bench
    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (out / "benchmark.md").read_text().startswith("# mhyolo benchmark")
    assert set(report) == {"settings", "rows", "head_overhead"}


def test_change_against_fp32_by_hand(bench):
    _, report, rows = bench
    for row in report["rows"]:
        if row["status"] != "ok":
            assert all(value is None for value in row["delta"].values())
            continue
        reference = rows["detector/torch" if row["model"] == "detector" else "torch"]
        for key in ACCURACY_KEYS:
            if row[key] is None:
                assert row["delta"][key] is None
            else:
                assert row["delta"][key] == pytest.approx(row[key] - reference[key], abs=1e-12)
    assert rows["torch"]["delta"]["map50"] == 0.0
    int8 = rows["onnx-int8"]
    assert int8["delta"]["map50_95"] == pytest.approx(int8["map50_95"] - rows["torch"]["map50_95"])
    from mhyolo.machine import cpu_info, ort_weight_range

    bits = "7-bit" if ort_weight_range(cpu_info()).reduce_range else "8-bit"
    assert int8["note"].startswith(f"{bits} weights; box convs float")  # what the table's INT8 is made of
    # the heads' overhead from the same run: model over detector (the model call alone), per runtime
    for fmt in ("torch", "onnx"):
        assert report["head_overhead"][fmt] == pytest.approx(
            rows[fmt]["latency_median_ms"] / rows[f"detector/{fmt}"]["latency_median_ms"])


def test_deltas_on_hand_made_rows():
    ref = Row(id="torch", model="model", format="torch", title="PyTorch FP32", map50=0.80, map50_95=0.50,
              cls_accuracy=0.90, typed_map50=None, latency_median_ms=10.0)
    q = Row(id="onnx-int8", model="model", format="onnx-int8", title="ONNX Runtime INT8", map50=0.75,
            map50_95=0.52, cls_accuracy=0.85, typed_map50=0.4)
    det = Row(id="detector/torch", model="detector", format="torch", title="PyTorch FP32", map50=0.70,
              map50_95=0.4, latency_median_ms=8.0)
    add_deltas([ref, q, det])
    assert q.delta["map50"] == pytest.approx(-0.05) and q.delta["map50_95"] == pytest.approx(0.02)
    assert q.delta["cls_accuracy"] == pytest.approx(-0.05) and q.delta["typed_map50"] is None
    assert det.delta["map50"] == 0.0  # compared with its own PyTorch row, not the model's
    assert head_overhead([ref, q, det]) == {"torch": pytest.approx(1.25)}


def test_timing_summary_and_interleaving():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))
    t = Timing.from_times([5.0, 1.0, 3.0])
    assert (t.median_ms, t.runs) == (3.0, 3)
    order: list[str] = []

    def boom():
        order.append("c")
        raise ValueError("no")

    times, errors = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b"), "c": boom},
                                      runs=2, warmup=1)
    assert order == ["a", "b", "c", "a", "b", "a", "b"]  # round by round; a failed candidate is dropped
    assert set(times) == {"a", "b"} and all(len(v) == 2 for v in times.values())
    assert errors == {"c": "ValueError: no"}


def test_blocked_timing_runs_each_format_alone_in_blocks_order_reversed_every_other_round(monkeypatch):
    import mhyolo.bench.timing as timing

    pauses: list[float] = []
    monkeypatch.setattr(timing.time, "sleep", pauses.append)
    order: list[str] = []

    def boom():
        order.append("c")
        raise ValueError("no")

    calls = {"A@1": lambda: order.append("a1"), "A@2": lambda: order.append("a2"), "B@1": lambda: order.append("b"),
             "C@1": boom}
    times, errors = blocked_times(calls, runs=4, warmup=1, group_of=lambda key: key.split("@")[0], rounds=2,
                                  pause_s=0.5)
    # round 0, A B C: each call 1 warm-up + 2 timed in a row; round 1 reversed, the failed C dropped
    assert order == ["a1"] * 3 + ["a2"] * 3 + ["b"] * 3 + ["c"] + ["b"] * 3 + ["a1"] * 3 + ["a2"] * 3
    assert {key: len(v) for key, v in times.items()} == {"A@1": 4, "A@2": 4, "B@1": 4}
    assert errors == {"C@1": "ValueError: no"}
    assert pauses == [0.5] * 6  # before every format of every round
    order.clear()
    times, _ = blocked_times({"A@1": lambda: order.append("a")}, runs=5, warmup=0, rounds=3, pause_s=0)
    assert len(order) == 5 and len(times["A@1"]) == 5  # 2 + 2 + 1: the runs split over the rounds
    times, _ = blocked_times({"A@1": lambda: None}, runs=1, warmup=0, rounds=3, pause_s=0)
    assert len(times["A@1"]) == 1  # fewer runs than rounds: one round


def test_existing_files_are_reused(bench, tmp_path):
    out, report, rows = bench
    onnx_file = tmp_path / "typehead.onnx"
    shutil.copyfile(out / "typehead.onnx", onnx_file)
    stamp = onnx_file.stat().st_mtime_ns
    code = main(["benchmark", "--weights", report["settings"]["weights"], "--data", report["settings"]["data"],
                 "--imgsz", str(IMGSZ), "--out", str(tmp_path), "--formats", "onnx", "--runs", "1", "--warmup", "0",
                 "--threads", "1", "--no-detector", "--quiet"])
    assert code == 0
    second = json.loads((tmp_path / "benchmark.json").read_text())
    # --no-detector: no rows for the model's own detector part
    assert [r["id"] for r in second["rows"]] == ["onnx"] and second["rows"][0]["status"] == "ok"
    assert onnx_file.stat().st_mtime_ns == stamp  # not exported again
    assert second["rows"][0]["map50"] == rows["onnx"]["map50"]
    assert second["rows"][0]["delta"]["map50"] is None  # no PyTorch FP32 row to compare with


def test_a_model_whose_classes_do_not_line_up_is_timed_not_scored(shared: Path, official_weights: Path,
                                                                   tmp_path: Path) -> None:
    """The COCO model (80 classes) against the 3-class ball set: every format timed, accuracy empty with
    the reason in the header, INT8 still calibrated on the dataset's train split."""
    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=2, per_type_val=1)
    out = tmp_path / "out"
    code = main(["benchmark", "--weights", str(official_weights), "--data", str(data), "--imgsz", str(IMGSZ),
                 "--out", str(out), "--formats", "torch", "onnx", "onnx-int8", "--runs", "2", "--warmup", "1",
                 "--threads", "1", "--calib-images", "2", "--quiet"])
    assert code == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert [r["id"] for r in report["rows"]] == ["torch", "onnx", "onnx-int8"]  # no type heads: no detector rows
    for row in report["rows"]:
        assert row["status"] == "ok" and row["latency_median_ms"] > 0, row
        assert all(row[key] is None for key in ACCURACY_KEYS), row
    assert "class ids would not line up" in report["settings"]["unscored"]
    assert "80 classes" in report["settings"]["unscored"]
    text = (out / "benchmark.md").read_text()
    assert "Accuracy not scored: the model detects 80 classes" in text
    assert report["settings"]["calibration"] == str(data)


def test_no_accuracy_times_without_a_dataset_and_names_the_cpu(official_weights: Path, tmp_path: Path) -> None:
    from mhyolo.machine import cpu_info

    out = tmp_path / "out"
    code = main(["benchmark", "--weights", str(official_weights), "--no-accuracy", "--imgsz", str(IMGSZ),
                 "--out", str(out), "--formats", "onnx", "onnx-int8", "openvino-int8-acc", "--runs", "2",
                 "--warmup", "1", "--threads", "1", "--calib-images", "3", "--quiet"])
    assert code == 0
    report = json.loads((out / "benchmark.json").read_text())
    rows = {row["id"]: row for row in report["rows"]}
    assert rows["onnx-int8"]["status"] == "ok" and rows["onnx-int8"]["latency_median_ms"] > 0
    assert len(list((out / "calibration" / "random_images").glob("*.png"))) == 3  # generated stand-ins
    frames = report["settings"]["frames"]  # timed end to end on those images too: there are no others
    assert [Path(f).parent.name for f in frames] == ["random_images"] * 3
    assert rows["onnx"]["e2e_median_ms"] > 0 and rows["onnx"]["frames_per_s"] > 0
    assert rows["openvino-int8-acc"]["status"] == "skipped"  # its accuracy bound needs a scored dataset
    assert "needs a dataset the model can be scored on" in rows["openvino-int8-acc"]["reason"]
    machine = report["settings"]["machine"]
    here = cpu_info()
    assert machine["name"] == here.name and machine["threads_used"] == 1 and machine["isa"] == here.isa
    text = (out / "benchmark.md").read_text()
    assert f"Machine: {here.name}, {here.logical_cores} logical cores, 1 thread(s) used" in text
    assert "Accuracy not scored: not asked (--no-accuracy)" in text and "stand-in images: timing only" in text


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    from mhyolo.machine import cpu_info

    xeon = cpu_info(4, cpuinfo="processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                              "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n")
    assert xeon.name == "Intel(R) Xeon(R) Platinum 8480+"
    assert xeon.isa == ["AVX2", "AVX-512", "AVX-512 VNNI", "AMX", "AMX-INT8", "AMX-BF16"]
    assert xeon.has("avx512_vnni") and not xeon.has("avx_vnni")
    assert "4 thread(s) used; AVX2, AVX-512" in xeon.describe()
    epyc = cpu_info(cpuinfo="model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert epyc.isa == ["AVX2"] and not epyc.has("avx512_vnni")


def test_the_ort_weight_range_follows_the_cpu() -> None:
    from mhyolo.machine import cpu_info, ort_weight_range

    def cpu(flags: str):
        return cpu_info(cpuinfo=f"model name\t: Some CPU\nflags\t\t: fpu {flags}\n")

    assert ort_weight_range(cpu("avx2 fma")).reduce_range is True  # AVX2 only: 7-bit, or the sums saturate
    for flags in ("avx2 avx512f avx512_vnni", "avx2 avx_vnni", "avx2 avx512f amx_tile amx_int8"):
        chosen = ort_weight_range(cpu(flags))
        assert chosen.reduce_range is False and "8-bit weights" in chosen.reason, flags
    assert "AVX-VNNI" in ort_weight_range(cpu("avx2 avx_vnni")).reason


def test_end_to_end_images_are_labelled_val_images_first(shared: Path, tmp_path: Path) -> None:
    from mhyolo.bench.frames import sample_frames

    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=1, per_type_val=2)
    val = sorted((tmp_path / "data" / "images" / "val").iterdir())
    (tmp_path / "data" / "labels" / "val" / f"{val[0].stem}.txt").write_text("")  # the first holds no ball now
    frames, files = sample_frames(data, count=4)
    assert files == val[1:5] and len(frames) == 4
    assert frames[0].shape == cv2.imread(str(val[1])).shape  # BGR as read from the file
    _, files = sample_frames(data, count=10)
    assert files == val[1:] + val[:1]  # the unlabelled one last, the split's 6 images in all
