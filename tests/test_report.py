"""`mhyolo report`: one self-contained HTML page per run folder, built from the files the
project's own writers leave (pipeline report, benchmark, cross-validation, training plots),
checked as text and, where Chromium is installed, as a browser lays it out."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from helpers.browser import find_chromium, measure, screenshot
from mhyolo.bench.report import Row, add_deltas, write_all
from mhyolo.cli import main
from mhyolo.errors import DataError
from mhyolo.eval.metrics import DetectionEvaluator, ImageResult
from mhyolo.eval.plots import plot_confusion_matrix, plot_image_grid, plot_pr_curve, plot_training_curves
from mhyolo.pipeline.crossval_report import mean_row, write_crossval_report
from mhyolo.pipeline.report import write_report
from mhyolo.pipeline.run_report import RunReport
from mhyolo.report import render_page, write_html_report
from mhyolo.report import sections as report_sections
from mhyolo.report.sections import base as section_registry
from mhyolo.report.html import Html, tag

NAMES = ["basketball", "football", "tennis-ball"]
IMG = re.compile(r'<img src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"')


# ------------------------------------------------------------------ run folders
def _training_folder(folder: Path, shared: Path | None = None, epochs: int = 3) -> list[Path]:
    """A training run folder with the files `mhyolo train` leaves; returns its PNGs."""
    folder.mkdir(parents=True)
    lines = ["epoch,train/box,metrics/mAP50,metrics/mAP50-95"]
    lines += [f"{e},{0.09 - 0.01 * e:.3f},{0.2 * e:.3f},{0.1 * e:.3f}" for e in range(1, epochs + 1)]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": "configs/models/yolov5n-typehead-lite.yaml",
                                                        "weights": "yolov5n.pt", "epochs": epochs, "imgsz": 128}))
    (folder / "done.json").write_text(json.dumps({"epochs": epochs, "best_fitness": 0.4217}))
    evaluator = DetectionEvaluator(NAMES)
    evaluator.add(ImageResult(np.array([[10, 10, 60, 60]]), np.array([0]), np.array([[12, 10, 60, 58]]),
                              np.array([0.9]), np.array([0]), 320, 240, "a.jpg"))
    pngs = [plot_training_curves(folder / "results.csv"), plot_pr_curve(evaluator.compute(), folder / "pr_curve.png"),
            plot_confusion_matrix(np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]]), NAMES,
                                  folder / "type_confusion_matrix.png")]
    if shared is not None:  # the grid of real validation photos: megabytes as PNG
        paths = sorted((shared / "data" / "seed_balls" / "images").glob("*.jpg"))[:4]
        images = [cv2.imread(str(p)) for p in paths]
        results = [ImageResult(np.array([[5, 5, 50, 50]]), np.array([0]), np.zeros((0, 4)), np.zeros(0),
                               np.zeros(0, int), im.shape[1], im.shape[0], p.name) for p, im in zip(paths, images)]
        pngs.append(plot_image_grid(images, results, NAMES, folder / "val_predictions.png"))
    return pngs


def _bench_rows(out: Path) -> list[Row]:
    common = {"map50": 0.812, "map50_95": 0.511, "cls_accuracy": 0.875, "typed_map50": 0.702}
    rows = [Row("torch", "model", "torch", "PyTorch FP32", file=str(out / "model.safetensors"), size_mb=7.4,
                latency_median_ms=21.3, latency_p90_ms=23.0, e2e_median_ms=24.0, e2e_p90_ms=26.1,
                outside_model=0.1125, frames_per_s=61.0, throughput_mode="2 threads", **common),
            Row("onnx-int8", "model", "onnx-int8", "ONNX Runtime INT8", file=str(out / "model-int8.onnx"),
                size_mb=2.1, latency_median_ms=9.7, latency_p90_ms=10.4, e2e_median_ms=10.8, e2e_p90_ms=11.5,
                outside_model=0.102, frames_per_s=130.0, throughput_mode="2 threads", **{**common, "map50": 0.799}),
            Row("rknn", "model", "rknn", "RKNN INT8 (simulator)"),
            Row("detector/torch", "detector", "torch", "PyTorch FP32", size_mb=7.0, latency_median_ms=20.1,
                latency_p90_ms=21.0, map50=0.812, map50_95=0.511)]
    rows[2].skip("export", "rknn-toolkit2 environment is missing (make rknn-env)")
    add_deltas(rows)
    return rows


@pytest.fixture
def pipeline_run(tmp_path: Path, shared: Path) -> Path:
    """A pipeline run folder: two stages' training folders, the benchmark, the report, the dataset."""
    run = tmp_path / "run-2024"
    pngs = _training_folder(run / "detector") + _training_folder(run / "multihead", shared)
    settings = {"weights": str(run / "model.safetensors"), "detector": None, "data": "data/data.yaml", "imgsz": 128,
                "runs": 5, "warmup": 2, "threads": 1, "out": str(run / "benchmark"),
                "machine": {"name": "Intel(R) Xeon(R) Platinum 8480+", "logical_cores": 4, "threads_used": 1,
                            "isa": ["AVX2", "AVX-512", "AVX-512 VNNI", "AMX-INT8"], "torch_kernels": "AVX512"}}
    bench = write_all(_bench_rows(run / "benchmark"), settings, run / "benchmark")
    pngs.append(bench["plot"])
    per_type = {n: {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 7} for n in NAMES}
    rows = {"detector": {"weights": "detector/weights/best.safetensors", "map50": 0.634, "map50_95": 0.301,
                         "precision": 0.7, "recall": 0.6, "latency_ms": 20.4},
            "multihead": {"weights": "multihead/weights/best.safetensors", "map50": 0.812, "map50_95": 0.511,
                          "precision": 0.81, "recall": 0.77, "cls_accuracy": 0.875, "image_accuracy": 0.9,
                          "typed_map50": 0.702, "typed_map50_95": 0.402, "per_type": per_type,
                          "latency_ms": 21.6}}
    write_report(run, RunReport(models=rows, imgsz=128, final_model=str(run / "model.safetensors"),
                                final_stage="multihead", head_overhead=1.059,
                                benchmark={k: str(v) for k, v in bench.items()}))
    (run / "data").mkdir()
    counts = {split: {n: {"images": 4, "boxes": 5} for n in [*NAMES, "negative"]} for split in ("train", "val")}
    (run / "data" / "report.json").write_text(json.dumps({"classes": NAMES, "seed": 0, "counts": counts,
                                                          "drop_counts": {"duplicate": 3}}))
    return run


def _images(page: str) -> list[tuple[str, bytes, int, int]]:
    return [(mime, base64.b64decode(data), int(w), int(h)) for mime, data, w, h in IMG.findall(page)]


def _self_contained(page: str) -> None:
    assert not re.search(r'(src|href)\s*=\s*"?\s*(https?:)?//', page, re.I), "a network reference"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert len(re.findall(r"<img ", page)) == len(IMG.findall(page)), "an image that is not inlined"


# ----------------------------------------------------------------------- tests
def test_pipeline_page_has_every_table_and_every_figure(pipeline_run: Path) -> None:
    page = write_html_report(pipeline_run).read_text()
    _self_contained(page)
    heads = re.findall(r'<h2 id="(\w+)">', page)
    assert heads == ["stages", "benchmark", "data", "training"]  # no cross-validation in this run
    assert "<h1>run-2024</h1>" in page and "mhyolo pipeline run" in page
    header = page[page.index("<header>"):page.index("</header>")]
    for label, value in (("model", "multihead stage (yolov5n-typehead-lite)"), ("mAP50", "0.812"),
                         ("type acc", "0.875"), ("typed mAP50", "0.702"),
                         ("fastest format", "ONNX Runtime INT8, 9.7 ms model call, 10.8 ms end to end"), ("dataset", "16 train / 16 val images")):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in header, label
    assert '<tr class="final"><th scope="row">multihead (final)</th><td>0.812</td><td>0.511</td>' in page
    assert "type head ×1.059" in page
    # every benchmark row, the skipped one with its reason as a numbered note under the table (no note
    # column to widen it), deltas against PyTorch FP32 in their value's cell
    for label in ("PyTorch FP32", "ONNX Runtime INT8", "RKNN INT8 (simulator)", "detector: PyTorch FP32"):
        assert f'<th scope="row">{label}' in page, label
    notes = page[page.index('<ol class="notes">'):]
    notes = notes[:notes.index("</ol>")]
    assert "<li>skipped: export: rknn-toolkit2 environment is missing (make rknn-env)</li>" in notes
    skipped = re.search(r'<th scope="row">RKNN INT8 \(simulator\) <sup>(\d+)</sup>', page)
    assert skipped and notes.split("<li>")[int(skipped.group(1))].startswith("skipped: export: rknn")
    assert '<span class="word">note</span>' not in page
    assert ("Machine: Intel(R) Xeon(R) Platinum 8480+, 4 logical cores, 1 thread(s) used; AVX2, AVX-512, "
            "AVX-512 VNNI, AMX-INT8; PyTorch kernels AVX512.") in page
    assert '<td>0.799 <span class="delta">-0.013</span></td>' in page and "<td>130.0 (2 threads)</td>" in page
    assert "<td>9.7</td><td>10.4</td><td>10.8</td><td>11.5</td><td>10%</td>" in page  # model, end to end, share
    assert '<span class="word">end-to-end</span> <span class="word">ms</span>' in page and "model call alone" in page
    # every PNG of the run once, decodable, at its own size; the photo grid as a smaller JPEG
    pngs = sorted(pipeline_run.glob("*/*.png"))
    images = _images(page)
    assert len(images) == len(pngs) == 8
    for mime, data, width, height in images:
        picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[:2] == (height, width)
    assert sorted((w, h) for *_, w, h in images) == sorted(cv2.imread(str(p)).shape[1::-1] for p in pngs)
    grid = pipeline_run / "multihead" / "val_predictions.png"
    jpegs = [data for mime, data, *_ in images if mime == "image/jpeg"]
    assert len(jpegs) == 1 and len(jpegs[0]) < grid.stat().st_size / 2
    assert "multihead/val_predictions.png" in page and "benchmark/benchmark.png" in page
    # the final stage's block is open, the others closed
    assert re.search(r'<details class="run" open><summary><span class="run-name">multihead \(final model\)', page)
    assert '<details class="run"><summary><span class="run-name">detector<' in page


def test_crossval_page_has_each_fold_and_the_mean(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    scores = {"seed": {"64": {"map50": 0.7, "map50_95": 0.4, "precision": 0.8, "recall": 0.6, "cls_accuracy": 0.9},
                       "96": {"map50": 0.5, "map50_95": 0.3}},
              "tennis": {"64": {"map50": 0.3, "map50_95": 0.1, "precision": 0.5, "recall": 0.4,
                                "false_positives_per_negative_image": 0.25}}}
    counts = {"train": {"images": 12}, "val": {"images": 3}, "test": {"images": 9, "negatives": 2}}
    folds = {name: {"counts": counts, "scores": s} for name, s in scores.items()}
    for name in folds:
        _training_folder(out / name / "train")
    summary = {"config": "p.yaml", "recipe": "recipe.yaml", "seed": 0, "imgsz": 64,
               "train": {"model": "configs/models/yolov5n-typehead-lite.yaml", "epochs": 3}, "folds": folds}
    write_crossval_report(out, summary)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    _self_contained(page)
    assert re.findall(r'<h2 id="(\w+)">', page) == ["crossval", "training"]
    assert "mhyolo cross-validation" in page
    mean = mean_row([s["64"] for s in scores.values()])
    assert f"<dt>held-out mAP50 (mean)</dt><dd>{mean['map50']:.3f}</dd>" in page
    assert "<h3>Scored at 64 px</h3>" in page and "<h3>Scored at 96 px</h3>" in page
    at_64 = page[page.index("Scored at 64 px"):page.index("Scored at 96 px")]
    assert '<tr class="mean"><th scope="row">mean</th><td></td><td></td><td>0.500</td><td>0.250</td>' in at_64
    assert "<td>9 (2)</td>" in at_64 and "<td>0.250</td>" in at_64  # FP / negative image of tennis
    assert "seed/train" in page and "tennis/train" in page
    assert len(_images(page)) == 1 + 2 * 3  # the crossval chart, three plots per fold


def test_a_training_run_alone_gets_only_its_own_section(tmp_path: Path) -> None:
    run = tmp_path / "det"
    _training_folder(run, epochs=4)
    page = render_page(run)
    assert re.findall(r'<h2 id="(\w+)">', page) == ["training"]
    assert "<dt>epochs</dt><dd>4</dd>" in page and "<dt>model</dt><dd>yolov5n-typehead-lite</dd>" in page
    assert re.search(r'<details class="run" open><summary><span class="run-name">this run<', page)
    assert len(_images(page)) == 3


def test_bad_input_is_refused_by_name_and_the_previous_page_is_kept(pipeline_run: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{re.escape(str(empty))}: nothing to report"):
        render_page(empty)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: not a run folder" in capsys.readouterr().err
    page = write_html_report(pipeline_run)
    before = page.read_bytes()
    bench = pipeline_run / "benchmark" / "benchmark.json"
    bench.write_text('{"settings": {},\n "rows": [\n')
    with pytest.raises(DataError, match=re.escape(f"{bench}:3: not valid JSON")):
        write_html_report(pipeline_run)
    assert page.read_bytes() == before and not list(pipeline_run.glob(".report.html*"))
    bench.write_text('{"settings": {}}')
    with pytest.raises(DataError, match=re.escape(f"{bench}: missing 'rows'")):
        render_page(pipeline_run)
    bench.unlink()
    (pipeline_run / "detector" / "results.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="results.png: not a readable image"):
        render_page(pipeline_run)


def test_a_registered_section_renders_only_when_its_inputs_exist(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(section_registry, "SECTIONS", list(section_registry.SECTIONS))

    @report_sections.register
    class Example(report_sections.Section):
        key, title, kind = "example", "Example", "example"

        def available(self) -> bool:
            return self.run.file("example.json") is not None

        def facts(self) -> dict[str, str]:
            return {"student mAP50": f"{self.run.json('example.json')['student']:.3f}"}

        def render(self) -> Html:
            return tag("p", f"student <{self.run.json('example.json')['student']}>")

    with pytest.raises(ValueError, match="taken"):
        report_sections.register(Example)
    run = tmp_path / "run"
    _training_folder(run)
    assert "Example" not in render_page(run)
    (run / "example.json").write_text('{"student": 0.5}')
    page = render_page(run)
    assert re.findall(r'<h2 id="(\w+)">', page) == ["training", "example"]
    assert "<p>student &lt;0.5&gt;</p>" in page and "<dt>student mAP50</dt><dd>0.500</dd>" in page


def test_the_page_loads_every_image_and_fits_a_phone_and_a_laptop(pipeline_run: Path, tmp_path: Path) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium on the PATH (apt-get install chromium, or set MHYOLO_CHROMIUM)")
    page = write_html_report(pipeline_run)
    for width, height in ((390, 844), (1280, 900)):
        seen = measure(browser, page, width, height, tmp_path / f"browser-{width}")
        assert seen["viewport"] == width
        assert seen["images"] == 8 and seen["broken"] == [], seen
        assert seen["text_chars"] > 1000
        assert seen["page_width"] <= width, f"the page is wider than {width} px: {seen}"
        assert 0 < seen["widest_image"] <= width
        if width == 390:  # wide tables scroll inside their own box, the page does not
            assert seen["tables_scrolling"] >= 1, seen
        shot = cv2.imread(str(screenshot(browser, page, width, height, tmp_path / f"shot-{width}.png")))
        assert shot is not None and shot.shape[:2] == (height, width)
        assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50, "a blank screenshot"
