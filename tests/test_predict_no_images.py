"""`mhyolo predict --json --no-images`: the same JSON lines as with the annotated images, and nothing
drawn or written."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from helpers.video import write_clip
from mhyolo.cli import main


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_json_only_gives_the_same_lines_and_writes_nothing(shared: Path, official_weights: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    images = shared / "images"
    args = ["predict", str(images), "--weights", str(official_weights), "--imgsz", "320", "--json"]
    assert main([*args, "--out", str(tmp_path / "drawn")]) == 0
    drawn = _lines(capsys)
    assert main([*args, "--no-images", "--out", str(tmp_path / "bare")]) == 0
    assert _lines(capsys) == drawn and len(drawn) == len(list(images.glob("*.jpg")))
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(p.name for p in images.glob("*.jpg"))
    assert not (tmp_path / "bare").exists()


def test_a_video_gives_a_line_per_frame_and_no_video(shared: Path, official_weights: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    frame = cv2.resize(cv2.imread(str(shared / "images" / "bus.jpg")), (320, 320))
    video = write_clip(tmp_path / "clip.mp4", [frame] * 3)
    out = tmp_path / "out"
    assert main(["predict", str(video), "--weights", str(official_weights), "--imgsz", "320", "--json",
                 "--no-images", "--out", str(out)]) == 0
    assert len(_lines(capsys)) == 3 and not out.exists()


def test_no_images_without_json_is_refused(shared: Path, official_weights: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(shared / "images"), "--weights", str(official_weights), "--no-images",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--no-images leaves nothing to write without --json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
