"""The training / validation dataset over one split of a `data.yaml`, and its DataLoader.

Every label file's class id is the ball *type*; samples carry it unchanged and the
trainer decides how to use it (the detector sees a single "ball" class).

A dataset whose data.yaml says `ignore_regions: true` also reads each image's ignore regions
(`mhyolo.data.spec`); they travel through letterbox, mosaic and every augmentation as boxes of
type `IGNORE_TYPE` and leave as `Sample.ignore` / `Batch.ignore`, never among the targets, so
nothing but the objectness loss (which leaves them out) sees them.

Randomness is a pure function of (seed, epoch, index): the same sample comes out
in any worker, in any order, on any run. Epoch and the mosaic switch live in a
small shared-memory tensor, so `set_epoch` / `set_mosaic` called in the main
process reach persistent DataLoader workers too (call them before iterating).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from mhyolo.data.augment import AugmentConfig, Augmenter
from mhyolo.data.copy_paste import CopyPaste, CropBank
from mhyolo.data.image_file import read_image
from mhyolo.data.labels import read_labels
from mhyolo.data.letterbox import PAD_VALUE, LetterboxInfo, letterbox
from mhyolo.data.mosaic import mixup, mosaic4
from mhyolo.data.naming import source_of
from mhyolo.data.pairing import split_files
from mhyolo.data.slices import Tile, choose_window, cut_window, is_large
from mhyolo.data.pathstr import ignore_file_for
from mhyolo.data.spec import DataSpec
from mhyolo.errors import ConfigError, DataError

# Show a progress bar when reading at least this many label files.
_PROGRESS_MIN_FILES = 500
# At most this many label issues are spelled out in the error message.
_ISSUES_SHOWN = 10
# YOLOv5 blends mixup partners with a ratio drawn from Beta(32, 32) (close to 0.5).
_MIXUP_BETA = 32.0
# Random streams of a sample besides its main one, so switching an option on changes no other draw
# (not 0: numpy seeds [seed, epoch, index, 0] as [seed, epoch, index], the main stream).
_WINDOW_STREAM, _PASTE_STREAM = 1, 2
# The type an ignore region carries through augmentation beside the real boxes (never a type id).
IGNORE_TYPE = -1


def _no_ignore() -> torch.Tensor:
    return torch.zeros((0, 4), dtype=torch.float32)


@dataclass
class Sample:
    """One network input with its boxes.

    `labels` rows are [type, cx, cy, w, h], normalised to the output image.
    `info` maps the output back to the original image; set for un-augmented
    (validation) samples only, as a mosaic has no single original.
    `ignore` rows are [cx, cy, w, h] (normalised): areas that train neither way.
    """

    image: torch.Tensor  # uint8 (3, imgsz, imgsz), RGB
    labels: torch.Tensor  # float32 (n, 5)
    path: Path
    info: LetterboxInfo | None
    ignore: torch.Tensor = field(default_factory=_no_ignore)  # float32 (m, 4)

    @property
    def original_shape(self) -> tuple[int, int] | None:
        return self.info.original_shape if self.info is not None else None


@dataclass
class Batch:
    """Collated samples; `targets` rows are [batch_index, type, cx, cy, w, h] (normalised), `ignore`
    rows [batch_index, cx, cy, w, h]."""

    images: torch.Tensor  # uint8 (B, 3, H, W), RGB
    targets: torch.Tensor  # float32 (N, 6)
    paths: list[Path]
    infos: list[LetterboxInfo | None]
    ignore: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 5), dtype=torch.float32))  # (M, 5)

    def __len__(self) -> int:
        return len(self.paths)

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return Batch(self.images.pin_memory(), self.targets.pin_memory(), self.paths, self.infos,
                     self.ignore.pin_memory())


def collate_fn(batch: list[Sample]) -> Batch:
    """Stack images and concatenate labels, prefixing each row with its image's batch index."""
    targets, ignore = [], []
    for i, sample in enumerate(batch):
        index = torch.full((sample.labels.shape[0], 1), float(i), dtype=torch.float32)
        targets.append(torch.cat([index, sample.labels], dim=1))
        ignore.append(torch.cat([torch.full((sample.ignore.shape[0], 1), float(i)), sample.ignore], dim=1))
    return Batch(images=torch.stack([s.image for s in batch]),
                 targets=torch.cat(targets) if targets else torch.zeros((0, 6), dtype=torch.float32),
                 paths=[s.path for s in batch], infos=[s.info for s in batch],
                 ignore=torch.cat(ignore) if ignore else torch.zeros((0, 5), dtype=torch.float32))


def load_split_labels(files: list[Path], num_types: int, progress: bool = True) -> list[np.ndarray]:
    """Read every label file of a split (paths from `mhyolo.data.pairing`); any bad line is fatal, listed by file:line."""
    labels, issues = [], []
    quiet = not progress or len(files) < _PROGRESS_MIN_FILES
    for label_path in tqdm(files, desc="labels", unit="file", disable=quiet):
        array, found = read_labels(label_path, num_types)
        labels.append(array)
        issues.extend(found)
    if issues:
        shown = "\n".join(f"  {issue}" for issue in issues[:_ISSUES_SHOWN])
        more = f"\n  ... and {len(issues) - _ISSUES_SHOWN} more" if len(issues) > _ISSUES_SHOWN else ""
        raise DataError(f"{len(issues)} bad label line(s); training does not skip them. "
                        f"Fix them or run `mhyolo data verify`:\n{shown}{more}")
    return labels


def load_ignore_regions(images: list[str]) -> list[np.ndarray]:
    """Every image's ignore regions, (m, 5) label rows (no file: none); a bad line is fatal, by file:line."""
    regions, issues = [], []
    for image in images:
        path = ignore_file_for(image)
        array, found = read_labels(path) if path is not None else (np.zeros((0, 5), np.float32), [])
        regions.append(array)
        issues.extend(found)
    if issues:
        shown = "\n".join(f"  {issue}" for issue in issues[:_ISSUES_SHOWN])
        raise DataError(f"{len(issues)} bad ignore-region line(s):\n{shown}")
    return regions


class YoloDataset(Dataset):
    """One split of a YOLO dataset as fixed-size square samples.

    With `augment=None` (validation) each image is letterboxed to `imgsz`. With an
    `AugmentConfig` (training) samples follow YOLOv5: mosaic of four images (or a
    single letterboxed image once `set_mosaic(False)`), random affine, optional
    mixup, HSV jitter and flips. Two options for small balls, both off by default:
    `augment.slices` lets a large image (the single image or any mosaic tile) be a
    native-resolution window instead of the whole image shrunk (`data/slices.py`), and
    `augment.copy_paste` pastes crops of the split's balls onto the sample after the
    affine step (`data/copy_paste.py`; the crop bank is read here, once).
    """

    def __init__(self, spec: DataSpec, split: str, imgsz: int, augment: AugmentConfig | None = None,
                 seed: int = 0, progress: bool = True):
        self.spec = spec
        self.split = split
        self.imgsz = int(imgsz)
        self.augment = augment
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        pairs = list(split_files(spec, split).checked().pairs())  # ambiguous labels, missing files: refused
        if not pairs:
            raise DataError(f"{spec.yaml_path}: split '{split}' has no images in {spec.describe(split)}")
        self.files = [Path(p.image) for p in pairs]
        # Class ids are type ids; a multi-head data.yaml may name the types separately.
        self.num_types = len(spec.type_names) if spec.type_names else spec.nc
        self.labels = load_split_labels([Path(p.label) for p in pairs], self.num_types, progress)
        # the source of each image (a built dataset's names say it; else its folder): copy-paste favours others
        self.sources = [source_of(path, spec.names) for path in self.files]
        self.ignore = load_ignore_regions([p.image for p in pairs]) if spec.ignore_regions else None
        self._augmenter = Augmenter(augment, self.imgsz) if augment is not None else None
        self._copy_paste = self._make_copy_paste(progress) if augment is not None else None
        # [epoch, mosaic on] in shared memory: visible to (persistent) worker processes.
        self._state = torch.tensor([0, 1], dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.files)

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    @property
    def mosaic_enabled(self) -> bool:
        return bool(self._state[1])

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of `epoch`; call before iterating the DataLoader."""
        self._state[0] = int(epoch)

    def set_mosaic(self, enabled: bool) -> None:
        """Switch mosaic (and with it mixup) on or off, e.g. off for the last N epochs."""
        self._state[1] = int(bool(enabled))

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        if self._augmenter is None:
            image, boxes, types, info = self._letterboxed(index)
        else:
            image, boxes, types = self._augmented(index, self._rng(index))
            info = None
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        rows = _to_normalised(boxes, types, image.shape[1], image.shape[0])
        ignored = rows[:, 0] == IGNORE_TYPE
        if not bool(ignored.any()):
            return Sample(image=pixels, labels=rows, path=self.files[index], info=info)
        return Sample(image=pixels, labels=rows[~ignored], path=self.files[index], info=info, ignore=rows[ignored, 1:])

    # -- internals -----------------------------------------------------------------------------

    def _rng(self, index: int, stream: int | None = None) -> np.random.Generator:
        key = [self.seed, self.epoch, index] + ([stream] if stream is not None else [])
        return np.random.default_rng(key)

    def _make_copy_paste(self, progress: bool) -> CopyPaste | None:
        assert self.augment is not None
        cfg = self.augment.copy_paste
        if not cfg.enabled:
            return None
        if cfg.max_px > self.imgsz:
            raise ConfigError(f"augment.copy_paste.max_px: {cfg.max_px} is larger than the training size {self.imgsz}")
        bank = CropBank.from_split(self.files, self.labels, self.sources, cfg, self.seed, read_image, progress)
        return CopyPaste(cfg, bank)

    def _pixel_boxes(self, index: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels of image `index` as pixel xyxy for an image of the given size, plus type ids (its
        ignore regions, if any, follow as `IGNORE_TYPE`)."""
        labels = self.labels[index]
        if self.ignore is not None and len(self.ignore[index]):
            regions = self.ignore[index].copy()
            regions[:, 0] = IGNORE_TYPE
            labels = np.concatenate([labels, regions])
        cx, cy, w, h = labels[:, 1] * width, labels[:, 2] * height, labels[:, 3] * width, labels[:, 4] * height
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        return boxes.reshape(-1, 4), labels[:, 0].astype(np.int64)

    def _letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, LetterboxInfo]:
        original = read_image(self.files[index])
        image, info = letterbox(original, self.imgsz)
        boxes, types = self._pixel_boxes(index, original.shape[1], original.shape[0])
        boxes = boxes * info.ratio + np.array([*info.pad, *info.pad], np.float32)
        return image, boxes, types, info

    def _tile(self, index: int, windows: np.random.Generator | None) -> Tile:
        """Image `index` with its long side imgsz: shrunk whole, or, for a large image when
        `windows` (the sample's window stream; None: slices off) draws it, an imgsz x imgsz
        window at native resolution (`data/slices.py`)."""
        image = read_image(self.files[index])
        if windows is not None:
            assert self.augment is not None
            cfg = self.augment.slices
            if is_large(image.shape, self.imgsz, cfg.min_ratio) and windows.random() < cfg.prob:
                boxes, types = self._pixel_boxes(index, image.shape[1], image.shape[0])
                choice = choose_window(image.shape, boxes, self.imgsz, windows, cfg.ball_prob)
                return cut_window(image, boxes, types, choice.window, self.imgsz, PAD_VALUE)
        return self._shrunk(index, image)

    def _shrunk(self, index: int, image: np.ndarray) -> Tile:
        """Image with its long side scaled to imgsz (aspect kept), as mosaic tiles are."""
        h0, w0 = image.shape[:2]
        ratio = self.imgsz / max(h0, w0)
        if ratio != 1:
            size = (max(1, int(round(w0 * ratio))), max(1, int(round(h0 * ratio))))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        boxes, types = self._pixel_boxes(index, image.shape[1], image.shape[0])
        return image, boxes, types

    def _mosaic(self, index: int, rng: np.random.Generator, windows: np.random.Generator | None) -> Tile:
        """`index` plus three random images around a random centre on a 2*imgsz canvas (each
        tile a window or not on its own draw)."""
        indices = [index, *rng.integers(0, len(self), size=3).tolist()]
        rng.shuffle(indices)
        center = rng.integers(self.imgsz // 2, self.imgsz * 3 // 2, size=2, endpoint=True)
        return mosaic4([self._tile(i, windows) for i in indices], self.imgsz, (int(center[0]), int(center[1])))

    def _augmented(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self._augmenter is not None and self.augment is not None
        cfg, aug = self.augment, self._augmenter
        windows = self._rng(index, _WINDOW_STREAM) if cfg.slices.enabled else None
        use_mosaic = self.mosaic_enabled and rng.random() < cfg.mosaic
        if use_mosaic:
            sample = aug.geometric(*self._mosaic(index, rng, windows), seed=_draw_seed(rng))
            if rng.random() < cfg.mixup:
                partner = int(rng.integers(0, len(self)))
                other = aug.geometric(*self._mosaic(partner, rng, windows), seed=_draw_seed(rng))
                sample = mixup(sample, other, float(rng.beta(_MIXUP_BETA, _MIXUP_BETA)))
        else:
            image, boxes, types = self._tile(index, windows)
            padded, info = letterbox(image, self.imgsz)  # long side is imgsz already: pads only
            boxes = boxes * info.ratio + np.array([*info.pad, *info.pad], np.float32)
            sample = aug.geometric(padded, boxes, types, seed=_draw_seed(rng))
        if self._copy_paste is not None:
            sample = self._copy_paste(*sample, rng=self._rng(index, _PASTE_STREAM), source=self.sources[index])
        return aug.photometric(*sample, seed=_draw_seed(rng))


def _draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32 - 1))


def _to_normalised(boxes: np.ndarray, types: np.ndarray, width: int, height: int) -> torch.Tensor:
    """Pixel xyxy + types -> (n, 5) float [type, cx, cy, w, h] normalised, clipped to the image."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    out = np.empty((boxes.shape[0], 5), np.float32)
    out[:, 0] = np.asarray(types).reshape(-1)
    out[:, 1] = (boxes[:, 0] + boxes[:, 2]) / 2 / width
    out[:, 2] = (boxes[:, 1] + boxes[:, 3]) / 2 / height
    out[:, 3] = (boxes[:, 2] - boxes[:, 0]) / width
    out[:, 4] = (boxes[:, 3] - boxes[:, 1]) / height
    return torch.from_numpy(out)


def build_dataloader(dataset: YoloDataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                     sampler: Sampler | None = None, drop_last: bool = False,
                     pin_memory: bool = False) -> DataLoader:
    """A DataLoader with a seeded shuffle order; pass a `DistributedSampler` as `sampler` for DDP.

    With a sampler, `shuffle` is the sampler's job (DataLoader refuses both). Workers are
    forked and must not reconfigure OpenCV's thread pool (`cv2.setNumThreads` in a forked
    child can deadlock), so there is deliberately no worker_init_fn.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate_fn, generator=generator, drop_last=drop_last,
                      pin_memory=pin_memory, persistent_workers=workers > 0)
