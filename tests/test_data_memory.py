"""Memory of the data stage per image: what pairing and the scan keep for each image must stay within
a few hundred bytes, so a build of 100,000 images needs tens of MB, not hundreds.

Measured with tracemalloc on generated sources of 2,000 and 4,000 images: the growth between the two
is the cost per image (what does not depend on the number of images cancels out). The images are
empty files: pairing never opens them, and the scan takes their hashes from a filled build cache.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from mhyolo.data.build import build_dataset
from mhyolo.data.pairing import split_files
from mhyolo.data.recipe import recipe_from_dict
from mhyolo.data.report import REPORT_JSON
from mhyolo.data.sources import HashCache, scan_source
from mhyolo.data.spec import load_data_spec

SIZES = (2000, 4000)


def empty_source(root: Path, n: int) -> Path:
    """A YOLO source of `n` images (empty files, never decoded here), one box each."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["a", "b"]}))
    for i in range(n):
        (root / "images" / f"im{i:05d}.jpg").touch()
        (root / "labels" / f"im{i:05d}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.2\n")
    return root


def traced(run: Callable[[], Any]) -> tuple[Any, int, int]:
    """`run()`'s result, the peak of traced memory while it ran and what is still held after it, in
    bytes above what was held before."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = run()
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before, held - before


def per_image(measure: Callable[[int], tuple[int, int]]) -> tuple[float, float]:
    """Growth per image of (peak, held) from the smaller size to the larger, after a warm-up run."""
    measure(50)  # imports and caches filled once, outside the comparison
    (peak_a, held_a), (peak_b, held_b) = (measure(n) for n in SIZES)
    step = SIZES[1] - SIZES[0]
    return (peak_b - peak_a) / step, (held_b - held_a) / step


def path_bytes(root: Path) -> int:
    """Memory of one image's path string: the bounds below allow for it, as it grows with tmp_path."""
    return sys.getsizeof(str(root / "images" / "im00000.jpg"))


def test_pairing_keeps_one_short_string_per_image(tmp_path: Path) -> None:
    def measure(n: int) -> tuple[int, int]:
        spec = load_data_spec(empty_source(tmp_path / f"pairing{n}", n))
        files, peak, held = traced(lambda: split_files(spec, "train", orphans=True))
        assert len(files.images) == n and files.orphans == [] and not files.issues
        return peak, held

    peak, held = per_image(measure)
    text = path_bytes(tmp_path / f"pairing{SIZES[1]}")
    assert held < text + 50, f"a read split holds {held:.0f} bytes per image (a path: {text})"
    # while pairing, each image's label path too, and the tables finding labels shared or left alone
    assert peak < 2 * text + 250, f"reading a split takes {peak:.0f} bytes per image at its peak (a path: {text})"


def test_scan_records_take_a_few_hundred_bytes_per_image(tmp_path: Path) -> None:
    def measure(n: int) -> tuple[int, int]:
        root = empty_source(tmp_path / f"scan{n}", n)
        recipe = recipe_from_dict({"classes": ["x", "y"], "scan": {"workers": 1, "cache": False},
                                   "sources": [{"path": str(root), "classes": {"a": "x", "b": "y"}}]})
        rng = np.random.default_rng(n)
        cache: HashCache = {os.path.realpath(p): rng.bytes(8) for p in (root / "images").iterdir()}
        scan, peak, held = traced(lambda: scan_source(recipe, 0, progress=False, cache=cache))
        assert len(scan.candidates) == n and not scan.drops
        assert scan.candidates[1].boxes.tolist() == [[1.0, 0.5, 0.5, np.float32(0.2), np.float32(0.2)]]
        return peak, held

    peak, held = per_image(measure)
    text = path_bytes(tmp_path / f"scan{SIZES[1]}")
    # a candidate: its record, path and boxes (the hash is the cache's, counted before)
    assert held < text + 300, f"the scan keeps {held:.0f} bytes per image (a path: {text})"
    assert peak < 2 * text + 300, f"the scan takes {peak:.0f} bytes per image at its peak (a path: {text})"


@pytest.mark.parametrize("orphan", [True, False])
def test_report_json_written_item_by_item_is_to_dict(tmp_path: Path, orphan: bool) -> None:
    """report.json is written one image and one drop at a time; the file is exactly `to_dict()`
    as json.dump writes it (an empty list included)."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["a", "b"]}))
    for i in range(8):
        blocks = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((64, 64), Image.NEAREST).save(root / "images" / f"im{i}.png")
        (root / "labels" / f"im{i}.txt").write_text("" if i == 7 else f"{i % 2} 0.5 0.5 0.2 0.2\n" * (1 + i % 3))
    if orphan:
        (root / "labels" / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    recipe = recipe_from_dict({"classes": ["x", "y"], "scan": {"workers": 1}, "val_fraction": 0.25,
                               "sources": [{"path": str(root), "classes": {"a": "x", "b": "y"},
                                            "negatives": "all"}]})
    report = build_dataset(recipe, tmp_path / "out", progress=False)
    written = (tmp_path / "out" / REPORT_JSON).read_text(encoding="utf-8")
    assert written == json.dumps(report.to_dict(), indent=1) + "\n"
    data = json.loads(written)
    assert [image["boxes"] for image in data["images"]].count(0) == 1 and len(data["images"]) == 8
    assert [d["stage"] for d in data["drops"]] == (["orphan-label"] if orphan else [])
