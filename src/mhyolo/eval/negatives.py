"""False alarms on images with nothing to find.

mAP says little about images without a ball (they add no recall, and their false
positives are diluted by every other image's), yet a user's stream is mostly such
frames. So validation also counts, on the negative images alone, the detections a
user would see (score >= the `predict` default threshold).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mhyolo.defaults import PREDICT_CONF
from mhyolo.eval.metrics import ImageResult

SHOWN_CONF = PREDICT_CONF  # `mhyolo predict`'s default --conf: what a user would see


@dataclass(frozen=True)
class NegativeStats:
    images: int  # images with no ground-truth box
    false_positives: int  # detections at or above `conf` on those images
    images_with_false_positives: int
    conf: float

    @property
    def per_image(self) -> float | None:
        return self.false_positives / self.images if self.images else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"negative_images": self.images, "negative_false_positives": self.false_positives,
                "negative_images_with_false_positives": self.images_with_false_positives,
                "false_positives_per_negative_image": self.per_image, "negative_conf": self.conf}


def negative_stats(results: Iterable[ImageResult], conf: float = SHOWN_CONF) -> NegativeStats:
    """Count detections scoring >= `conf` on the images whose ground truth is empty."""
    images = alarms = flagged = 0
    for result in results:
        if len(result.gt_boxes):
            continue
        images += 1
        count = int((result.pred_scores >= conf).sum())
        alarms += count
        flagged += int(count > 0)
    return NegativeStats(images=images, false_positives=alarms, images_with_false_positives=flagged, conf=conf)
