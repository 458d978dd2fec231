"""A leave-one-source-out fold on generated sources with planted cross-source copies.

Three sources of smooth random pictures, each with one ball (and one picture with none):
`beta` holds slightly brightened copies of three of `alpha`'s pictures (one of them the empty
one), `gamma` one more. Holding `alpha` out must score every `alpha` picture and train on no
copy of one; holding `beta` out must take the `alpha` originals of its copies out of training.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mhyolo.data.dedup import cross_pairs, image_hash
from mhyolo.data.folds import build_fold, scan_all
from mhyolo.data.hashing import decode_image
from mhyolo.data.pairing import list_images
from mhyolo.data.recipe import load_recipe

SIDE = 96
OWN = {"alpha": 6, "beta": 6, "gamma": 5}  # pictures with a ball that are each source's own
EMPTY = "alpha_empty"  # alpha's picture without a ball
# planted copies: copy file name -> the alpha picture it copies
COPIES = {"beta": {"beta_copy0": "alpha_0", "beta_copy1": "alpha_1", "beta_copy_empty": EMPTY},
          "gamma": {"gamma_copy0": "alpha_4"}}


def _picture(rng: np.random.Generator, ball: bool) -> tuple[np.ndarray, list[str]]:
    """A smooth random RGB picture (bicubic 6x6 noise, so its perceptual hash is its own) and its YOLO label lines."""
    image = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    if not ball:
        return image, []
    cx, cy = (int(v) for v in rng.integers(24, 72, 2))
    r = int(rng.integers(8, 16))
    cv2.circle(image, (cx, cy), r, (240, 240, 240), -1)
    return image, [f"0 {cx / SIDE:.6f} {cy / SIDE:.6f} {2 * r / SIDE:.6f} {2 * r / SIDE:.6f}"]


def _write(folder: Path, name: str, image: np.ndarray, lines: list[str]) -> Path:
    path = folder / "images" / f"{name}.png"
    cv2.imwrite(str(path), image)
    (folder / "labels" / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
    return path


def _sources(root: Path) -> dict[str, dict[str, Path]]:
    """Write the three sources; returns source -> picture name -> file."""
    rng = np.random.default_rng(0)
    files: dict[str, dict[str, Path]] = {}
    pictures: dict[str, tuple[np.ndarray, list[str]]] = {}
    for source, count in OWN.items():
        folder = root / source
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        (folder / "data.yaml").write_text("train: images\nval: images\nnames: [ball]\n")
        files[source] = {}
        names = [f"{source}_{i}" for i in range(count)] + ([EMPTY] if source == "alpha" else [])
        for name in names:
            pictures[name] = _picture(rng, ball=name != EMPTY)
            files[source][name] = _write(folder, name, *pictures[name])
    for source, copies in COPIES.items():
        for name, original in copies.items():
            image, lines = pictures[original]
            brighter = np.clip(image.astype(np.int16) + 4, 0, 255).astype(np.uint8)  # new bytes, same picture
            files[source][name] = _write(root / source, name, brighter, lines)
    return files


def _recipe(root: Path) -> Path:
    recipe = {"classes": ["ball"], "seed": 0, "val_fraction": 0.25, "scan": {"workers": 1},
              "sources": [{"name": name, "path": str(root / name), "classes": {"ball": "ball"}, "negatives": "all"}
                          for name in OWN]}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _hashes(paths: list[Path]) -> np.ndarray:
    return np.stack([image_hash(decode_image(p)[0]) for p in paths])


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("sources")
    return root, _sources(root)


def test_the_generated_copies_are_near_duplicates_and_nothing_else_is(generated) -> None:
    root, files = generated
    threshold = load_recipe(_recipe(root)).dedup.threshold
    everything = [(source, name, path) for source, named in files.items() for name, path in named.items()]
    hashes = _hashes([path for _, _, path in everything])
    pairs = {(everything[i][1], everything[j][1]) for i, j, _ in cross_pairs(hashes, hashes, threshold) if i < j}
    planted = {(original, copy) for copies in COPIES.values() for copy, original in copies.items()}
    assert pairs == planted


@pytest.mark.parametrize(("held_out", "removed"), [
    ("alpha", {"beta_copy0", "beta_copy1", "beta_copy_empty", "gamma_copy0"}),
    ("beta", {"alpha_0", "alpha_1", EMPTY}),
])
def test_fold_scores_every_held_out_picture_and_trains_on_no_copy_of_one(generated, tmp_path: Path, held_out: str,
                                                                        removed: set[str]) -> None:
    root, files = generated
    recipe = load_recipe(_recipe(root))
    out = tmp_path / "fold"
    report = build_fold(recipe, held_out, out, scans=scan_all(recipe, progress=False), progress=False)

    by_bytes = {path.read_bytes(): name for named in files.values() for name, path in named.items()}
    split_names = {split: {by_bytes[p.read_bytes()] for p in list_images(out / "images" / split)}
                   for split in ("train", "val", "test")}
    assert split_names["test"] == set(files[held_out])  # every held-out picture, the empty one too
    assert report.counts["test"]["images"] == len(files[held_out])
    assert {Path(c["image"]).stem for c in report.held_out_copies} == removed
    trained = split_names["train"] | split_names["val"]
    assert split_names["train"] and split_names["val"] and not trained & removed
    assert not trained & split_names["test"]
    test_hashes = _hashes(list_images(out / "images" / "test"))
    for split in ("train", "val"):
        assert cross_pairs(_hashes(list_images(out / "images" / split)), test_hashes, recipe.dedup.threshold) == []
    # the held-out labels go with their pictures: as many boxes as the held-out source has balls
    assert report.counts["test"]["boxes"] == sum(1 for name in files[held_out] if "empty" not in name)
