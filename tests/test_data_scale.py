"""The data stage at scale: indexed near-duplicate search against all pairs, parallel hashing
against serial, and the hash cache between builds (generated data, no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mhyolo.data import hash_index, hashing, sources
from mhyolo.data.build import build_dataset
from mhyolo.data.dedup import (AllPairsWarning, all_cross_pairs, all_near_pairs, cross_pairs, near_pairs,
                               pack_hashes, packed_cross_pairs, packed_near_pairs, unpack_hashes)
from mhyolo.data.hash_cache import HashStore, file_stamps
from mhyolo.data.hash_index import MAX_PROBES, chunking, index_cross_pairs, index_pairs, max_threshold, plan_search
from mhyolo.data.hashing import THUMB_SIZE, check_image, check_images
from mhyolo.data.recipe import recipe_from_dict
from mhyolo.data.stages import Stages
from mhyolo.data.verify import verify_dataset
from mhyolo.errors import ConfigError


def planted_hashes(n: int, bits: int, threshold: int, seed: int, per_distance: int = 6) -> np.ndarray:
    """Random hashes, plus copies of some of them with exactly 0..threshold+1 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.random((n, bits)) < 0.5
    for distance in range(threshold + 2):
        for _ in range(per_distance):
            source, copy = rng.choice(n, 2, replace=False)
            hashes[copy] = hashes[source]
            hashes[copy, rng.choice(bits, distance, replace=False)] ^= True
    return hashes


CASES = [(64, 0), (64, 3), (64, 6), (64, 10), (64, 17), (36, 5), (256, 12), (256, 40)]


@pytest.mark.parametrize(("bits", "threshold"), CASES)
def test_index_returns_exactly_the_all_pairs_result(bits: int, threshold: int) -> None:
    hashes = planted_hashes(500, bits, threshold, seed=bits * 100 + threshold)
    expected = all_near_pairs(hashes, threshold)
    assert set(range(threshold + 1)) <= {d for _, _, d in expected}, "every planted distance within the threshold"
    assert near_pairs(hashes, threshold) == expected
    assert packed_near_pairs(pack_hashes(hashes), bits, threshold) == expected  # read packed, as a build keeps them
    a, b = hashes[:220], hashes[220:]
    assert cross_pairs(a, b, threshold) == all_cross_pairs(a, b, threshold)
    assert packed_cross_pairs(pack_hashes(a), pack_hashes(b), bits, threshold) == all_cross_pairs(a, b, threshold)
    # every chunking the planner weighs, not only the one it picks
    for m in range(1, threshold + 2):
        plan = chunking(bits, threshold, m)
        if any(c.probes > MAX_PROBES for c in plan.chunks):
            continue
        assert [tuple(x) for x in zip(*(v.tolist() for v in index_pairs(hashes, plan)))] == expected, plan
        found = list(zip(*(v.tolist() for v in index_cross_pairs(a, b, plan))))
        assert found == all_cross_pairs(a, b, threshold), plan


def test_index_with_large_buckets_in_small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many copies of few pictures (video frames) fill buckets; candidates are expanded a few at a time."""
    rng = np.random.default_rng(7)
    scenes = rng.random((12, 64)) < 0.5
    hashes = np.repeat(scenes, 25, axis=0)
    hashes ^= rng.random(hashes.shape) < 0.03
    monkeypatch.setattr(hash_index, "_BATCH", 37)
    expected = all_near_pairs(hashes, 6)
    assert len(expected) > 1000
    assert near_pairs(hashes, 6) == expected
    assert cross_pairs(hashes[::2], hashes[1::2], 6) == all_cross_pairs(hashes[::2], hashes[1::2], 6)


def test_threshold_beyond_the_index_warns_and_compares_all_pairs() -> None:
    limit = max_threshold(64)
    assert plan_search(64, limit) is not None and plan_search(64, limit + 1) is None
    hashes = planted_hashes(300, 64, limit + 1, seed=3)
    with pytest.warns(AllPairsWarning, match=fr"threshold {limit + 1} on 64-bit hashes .*\({limit} at most\)"):
        found = near_pairs(hashes, limit + 1)
    assert found == all_near_pairs(hashes, limit + 1) and found
    with pytest.warns(AllPairsWarning):
        assert packed_near_pairs(pack_hashes(hashes), 64, limit + 1) == found
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        near_pairs(hashes, -1)
    assert near_pairs(hashes[:1], 6) == [] and cross_pairs(hashes[:0], hashes, 6) == []


def save_picture(path: Path, seed: int, side: int = 96) -> None:
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((side, side), Image.NEAREST).save(path)


def test_parallel_hashing_matches_serial_in_order(tmp_path: Path) -> None:
    paths = []
    for i in range(23):
        path = tmp_path / (f"{i:02d}.png" if i % 5 == 0 else f"{i:02d}.jpg")
        save_picture(path, i, side=1600 if i < 4 else 96)  # the first chunk is the slowest to come back
        paths.append(path)
    broken = paths[11]
    broken.write_bytes(broken.read_bytes()[:300])
    for method, size in (("phash", 8), ("dhash", 16)):
        serial = check_images(paths, method, size, workers=1, progress=False)
        parallel = check_images(paths, method, size, workers=2, progress=False, chunk=4)
        assert len(parallel) == len(paths)
        assert parallel.packed.shape == (len(paths), size * size // 8), "hashes are kept packed, 8 bits a byte"
        for path, (h1, e1), (h2, e2) in zip(paths, serial, parallel):
            assert e1 == e2
            if path == broken:
                assert h1 is None and h2 is None and "does not decode" in e1
            else:
                assert h1.shape == (size * size,) and np.array_equal(h1, h2), path.name
                assert np.array_equal(h2, check_image(path, method, size)[0])
        hashes = [h for h, _ in parallel if h is not None]
        assert len({h.tobytes() for h in hashes}) == len(hashes), "distinct pictures, distinct hashes"
    with pytest.raises(ConfigError, match="workers"):
        check_images(paths, "phash", workers=0, progress=False)


def make_source(root: Path, n: int) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["a", "b"]}))
    for i in range(n):
        save_picture(root / "images" / f"im{i:03d}.jpg", i)
        (root / "labels" / f"im{i:03d}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.2\n")
    return root


def recipe(src: Path, **scan) -> object:
    return recipe_from_dict({"classes": ["x", "y"], "scan": scan,
                             "sources": [{"path": str(src), "name": "s", "classes": {"a": "x", "b": "y"}}]})


def written(report) -> list[tuple]:
    return [(i.file, i.split, i.origin, i.group, i.boxes.tolist()) for i in report.images]


def test_hash_cache_reused_between_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_source(tmp_path / "src", 20)
    decoded: list[str] = []

    def counting(paths, *args, **kwargs):
        decoded.extend(Path(p).name for p in paths)
        return check_images(paths, *args, **kwargs)

    monkeypatch.setattr(sources, "check_images", counting)
    monkeypatch.setattr(hashing, "MIN_CHUNK", 4)  # 20 images in 5 tasks over 2 processes
    first = build_dataset(recipe(src, workers=2), tmp_path / "one", progress=False)
    assert len(decoded) == 20 and HashStore(src, "phash", 8, THUMB_SIZE).path.is_file()

    decoded.clear()
    second = build_dataset(recipe(src, workers=1), tmp_path / "two", progress=False)
    assert decoded == []
    assert written(second) == written(first) and second.groups == first.groups

    changed = src / "images" / "im007.jpg"
    save_picture(changed, 107)  # a changed file is decoded again, the rest are not
    decoded.clear()
    build_dataset(recipe(src), tmp_path / "three", progress=False)
    assert decoded == ["im007.jpg"]
    key = str(changed.resolve())
    found, packed = HashStore(src, "phash", 8, THUMB_SIZE).lookup([key], file_stamps([key]))
    assert found.tolist() == [True]
    assert np.array_equal(unpack_hashes(packed[0], 64), check_image(changed, "phash", 8)[0])

    decoded.clear()
    build_dataset(recipe(src, cache=False), tmp_path / "four", progress=False)
    assert len(decoded) == 20

    HashStore(src, "phash", 8, THUMB_SIZE).path.write_bytes(b"not a cache")  # unreadable: ignored, rewritten
    decoded.clear()
    build_dataset(recipe(src), tmp_path / "five", progress=False)
    assert len(decoded) == 20
    keys = [str(p.resolve()) for p in sorted((src / "images").iterdir())]
    found, _ = HashStore(src, "phash", 8, THUMB_SIZE).lookup(keys, file_stamps(keys))
    assert len(keys) == 20 and found.all()


def test_stages_and_bad_settings(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", 6)
    stages = Stages()
    build_dataset(recipe(src), tmp_path / "out", progress=False, stages=stages)
    assert set(stages.seconds) == {"scan", "hash", "dedup", "select", "write", "verify/scan", "verify/hash",
                                   "verify/dedup", "report"}
    with pytest.raises(ConfigError, match="scan.workers"):
        recipe(src, workers=0)
    with pytest.raises(ConfigError, match="leak threshold 64: must be in 0..63"):
        verify_dataset(tmp_path / "out" / "data.yaml", leak_threshold=64, progress=False)
