"""The stand-in calibration set INT8 formats are timed with when no dataset is given."""

from __future__ import annotations

from pathlib import Path

from mhyolo.data.pairing import split_images
from mhyolo.data.spec import load_data_spec
from mhyolo.deploy.calibration import stand_in_calibration_set


def test_generated_set_reads_back_from_a_relative_folder(tmp_path, monkeypatch):
    """`mhyolo benchmark --no-accuracy --out runs/x` passes a relative folder: the data.yaml must still
    name images that exist (a data.yaml's paths are read from its own folder)."""
    monkeypatch.chdir(tmp_path)
    data_yaml = stand_in_calibration_set(Path("runs/bench/calibration"), count=3)
    files = split_images(load_data_spec(data_yaml), "train")
    assert len(files) == 3 and all(f.is_file() for f in files)


def test_user_folder_is_used_as_it_is(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.jpg"), np.full((32, 48, 3), 100 + i, np.uint8))
    monkeypatch.chdir(tmp_path)
    data_yaml = stand_in_calibration_set(Path("calib"), images=Path("photos"))
    assert sorted(f.name for f in split_images(load_data_spec(data_yaml), "train")) == ["p0.jpg", "p1.jpg"]
