"""What one adaptation run is asked to do: every choice in one dataclass, checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mhyolo.adapt.guard import DEFAULT_MAX_VAL_DROP
from mhyolo.errors import ConfigError

DEFAULT_KEEP = 0.5  # keep threshold without labelled validation data to calibrate one
DEFAULT_IGNORE = 0.1  # boxes scored from here up to the keep threshold become ignore regions
TARGET_PRECISION = 0.9  # the calibrated keep threshold is the lowest score with this precision
# Below this share of target images with a kept box a student learns nothing of the target and only
# trains longer on the labelled data: on the held-out football source (2 of 90 images) that lowered its
# mAP50 from 0.255 to 0.123, where the basketball source (62 of 413) gained (README)
MIN_KEPT_SHARE = 0.05
DEFAULT_DEDUP_BITS = 6  # near-duplicates: perceptual hashes this close (the data stage's default)


@dataclass
class AdaptSettings:
    weights: str  # the model to adapt (.pt or .safetensors): the first teacher and the student's start
    images: str  # a folder of target images or a video
    out: str  # the run folder
    labelled: str | None = None  # data.yaml of labelled data (a corrected pseudo folder too)
    fps: float = 5.0  # frames sampled per second of a video
    keep: float | None = None  # keep threshold; None: calibrated on the labelled val split, else DEFAULT_KEEP
    ignore: float = DEFAULT_IGNORE
    precision: float = TARGET_PRECISION
    temporal_k: float = 2.0  # video: a kept box needs a ball within k x its size in a neighbouring frame; 0: off
    dedup_bits: int | None = DEFAULT_DEDUP_BITS  # None: keep near-duplicate images
    rounds: int = 1  # >1: each round's student is the next round's teacher
    epochs: int = 10
    empty_targets: bool = False  # also train on target images with no kept box, as ball-free images
    min_kept: float = MIN_KEPT_SHARE  # a round trains a student only if this share of targets has a kept box
    max_val_drop: float | None = DEFAULT_MAX_VAL_DROP  # the adapted model is kept only if the labelled val
    # mAP50 falls by at most this (`adapt.guard`); None: kept whatever it scores
    hyp: str = "multihead"  # training settings (shipped name or YAML path)
    imgsz: int | None = None  # None: the size the model was trained at
    batch: int = 16
    teacher: str = "auto"  # a registered teacher predictor (`adapt.teacher`)
    slice_factor: float = 2.0  # "auto" teacher: slice images whose long side is at least this x imgsz
    classes: list[int] | None = None  # keep only these detector classes (e.g. COCO's 32, "sports ball")
    device: str = "cpu"
    workers: int = 2  # data loader processes
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.ignore < 1.0:
            raise ConfigError(f"--ignore {self.ignore}: must be in (0, 1)")
        if self.keep is not None and not self.ignore <= self.keep <= 1.0:
            raise ConfigError(f"--keep {self.keep}: must be in [--ignore {self.ignore}, 1]")
        if not 0.0 < self.precision <= 1.0:
            raise ConfigError(f"--precision {self.precision}: must be in (0, 1]")
        if self.fps <= 0:
            raise ConfigError(f"--fps {self.fps}: must be positive")
        if self.temporal_k < 0:
            raise ConfigError(f"--temporal-k {self.temporal_k}: must be >= 0 (0 switches the filter off)")
        if self.dedup_bits is not None and not 0 <= self.dedup_bits < 64:
            raise ConfigError(f"--dedup {self.dedup_bits}: must be in 0..63 bits of a 64-bit hash")
        if self.rounds < 1 or self.epochs < 1 or self.batch < 1:
            raise ConfigError("--rounds, --epochs and --batch must be at least 1")
        if not 0.0 <= self.min_kept <= 1.0:
            raise ConfigError(f"--min-kept {self.min_kept}: must be a share in [0, 1]")
        if self.max_val_drop is not None and self.max_val_drop < 0:
            raise ConfigError(f"--max-val-drop {self.max_val_drop}: must be 0 or more")
        if self.slice_factor < 1.0:
            raise ConfigError(f"--slice-factor {self.slice_factor}: must be at least 1")

    def recorded(self) -> dict[str, Any]:
        """The settings that decide the results: a re-run into the same folder must match them."""
        data = asdict(self)
        for name in ("out", "device", "workers", "progress"):
            data.pop(name)
        return data
