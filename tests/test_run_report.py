"""`RUN/report.json` as one typed object: written in a fixed order, read back whole (keys it does not know
kept), and a wrong field refused naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mhyolo.errors import DataError
from mhyolo.pipeline.run_report import RunReport
from mhyolo.report.run_folder import RunFolder

ROWS = {"detector": {"map50": 0.6, "map50_95": 0.3}, "multihead": {"map50": 0.8, "map50_95": 0.5, "latency_ms": 21.0}}


def test_written_in_the_fields_order_with_only_the_parts_that_ran(tmp_path: Path):
    report = RunReport(models=ROWS, imgsz=320, final_model="m.safetensors", final_stage="multihead",
                       head_overhead=1.05, benchmark={"markdown": "b.md"})
    data = json.loads(report.write(tmp_path).read_text())
    assert list(data) == ["models", "imgsz", "final_model", "final_stage", "head_overhead", "benchmark"]
    assert report.final_row() == ROWS["multihead"]
    assert RunReport(models={}).final_row() == {}


def test_read_back_whole_with_keys_a_later_version_wrote(tmp_path: Path):
    path = tmp_path / "report.json"
    text = json.dumps({"models": ROWS, "imgsz": 320, "final_stage": "detector",
                       "distill": {"chosen": "student", "groups": {}}, "image_head_overhead": 1.2,
                       "tracking": {"mota": 0.5}}, indent=2)
    path.write_text(text)
    report = RunReport.read(path)
    assert report.distill == {"chosen": "student", "groups": {}} and report.unknown == {"tracking": {"mota": 0.5}}
    assert report.final_row() == ROWS["detector"]
    assert json.dumps(report.to_json(), indent=2) == text


@pytest.mark.parametrize("data, words", [
    ({"models": ROWS, "imgsz": "320"}, "'imgsz' must be a whole number, got str"),
    ({"models": ROWS, "head_overhead": True}, "'head_overhead' must be a number, got bool"),
    ({"models": ROWS, "distill": ["student"]}, "'distill' must be a JSON object, got list"),
    ({"models": {"detector": 0.6}}, "'models' must map stage names to scores"),
    ({"imgsz": 320}, "missing 'models'"),
    ([ROWS], "expected a JSON object, got list")])
def test_a_wrong_field_is_refused_naming_the_file_and_the_field(tmp_path: Path, data, words: str):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=str(path).replace(".", r"\.") + ": " + _escaped(words)):
        RunReport.read(path)


def _escaped(words: str) -> str:
    import re

    return re.escape(words)


def test_the_page_reads_no_pipeline_report_from_another_commands_report(tmp_path: Path):
    (tmp_path / "report.json").write_text(json.dumps({"images": 12, "kept": 7}))  # e.g. `mhyolo adapt`'s
    assert RunFolder(tmp_path).pipeline_report() is None
    (tmp_path / "report.json").write_text(json.dumps({"models": ROWS, "imgsz": 1.5}))
    with pytest.raises(DataError, match="'imgsz' must be a whole number"):
        RunFolder(tmp_path).pipeline_report()
