"""Calibration images for post-training quantization, shared by every INT8 backend.

Quantization ranges are only right when the calibration tensors look exactly like
what the deployed model will be fed, so the images go through the inference
pre-processing (`letterbox` to the model's size, RGB, [0, 1], NCHW) and nothing else.
They are drawn from the TRAIN split with a seeded generator: the validation split is
kept for scoring the quantized model, and the same seed gives the same images on any
machine. ONNX Runtime and OpenVINO take the float NCHW batches; RKNN toolkits take
uint8 pixels (they normalise inside the converted model), so both forms come from
the one pipeline here; `calibration_files` and `letterboxed_rgb` are the pieces a
toolkit that wants its own file format builds on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from mhyolo.data.image_file import read_image
from mhyolo.data.pairing import split_images
from mhyolo.data.spec import IMAGE_SUFFIXES, load_data_spec
from mhyolo.errors import DataError
from mhyolo.infer.preprocess import letterbox

CALIB_SPLIT = "train"


def calibration_files(data_yaml: str | Path, count: int = 50, seed: int = 0, split: str = CALIB_SPLIT) -> list[Path]:
    """`count` image paths drawn without replacement from `split` (all of them when it has fewer)."""
    if count <= 0:
        raise DataError(f"{data_yaml}: the number of calibration images must be positive, got {count}")
    spec = load_data_spec(data_yaml)
    files = split_images(spec, split)
    if not files:
        raise DataError(f"{spec.yaml_path}: split '{split}' has no images in {spec.describe(split)} to calibrate on")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), size=min(count, len(files)), replace=False)
    return [files[i] for i in sorted(chosen.tolist())]  # sorted: the order does not depend on the draw


def letterboxed_rgb(path: Path, imgsz: int) -> np.ndarray:
    """One image as the network sees it before scaling: uint8 RGB HWC (imgsz, imgsz, 3)."""
    image, _ = letterbox(read_image(path), imgsz)
    return image


def calibration_images_uint8(data_yaml: str | Path, imgsz: int, count: int = 50, seed: int = 0,
                             progress: bool = True) -> list[np.ndarray]:
    """Calibration images as uint8 RGB NHWC arrays (1, imgsz, imgsz, 3), for toolkits (RKNN)
    that take raw pixels and apply the [0, 1] scaling inside the converted model."""
    files = calibration_files(data_yaml, count, seed)
    return [letterboxed_rgb(p, imgsz)[None] for p in tqdm(files, desc="calibration images", unit="img",
                                                          leave=False, disable=not progress)]


def to_nchw_float(image_nhwc: np.ndarray) -> np.ndarray:
    """uint8 (1, H, W, 3) RGB -> float32 (1, 3, H, W) in [0, 1]: the exported graph's input."""
    return np.ascontiguousarray(image_nhwc.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def calibration_batches(data_yaml: str | Path, imgsz: int, count: int = 50, seed: int = 0,
                        progress: bool = True) -> list[np.ndarray]:
    """Calibration inputs as float32 RGB NCHW arrays (1, 3, imgsz, imgsz) in [0, 1]."""
    return [to_nchw_float(image) for image in calibration_images_uint8(data_yaml, imgsz, count, seed, progress)]



def stand_in_calibration_set(folder: Path, images: Path | None = None, count: int = 50, seed: int = 0) -> Path:
    """A `data.yaml` whose train split is `images` (a folder of the user's photos) or, with none,
    `count` generated images of smooth random colour: INT8 formats can then be made and timed
    without a dataset. Ranges calibrated on random images are meaningless for accuracy; they only
    give the quantized graph the right shape and kernels, which is all timing needs."""
    import cv2
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if images is not None:
        images = Path(images).resolve()
        if not images.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in images.iterdir()):
            raise DataError(f"{images}: no images to calibrate on (a folder of {', '.join(IMAGE_SUFFIXES)} files)")
        train = images
    else:
        train = folder.resolve() / "random_images"  # the yaml reads paths from its own folder: absolute
        train.mkdir(exist_ok=True)
        rng = np.random.default_rng(seed)
        for i in range(count):
            target = train / f"random_{i:04d}.png"
            if not target.is_file():  # smooth blobs, not per-pixel noise: activations closer to a photo's
                small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
                cv2.imwrite(str(target), cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC))
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"train": str(train), "names": ["object"]}, sort_keys=False))
    return data_yaml
