"""The default inference rule for a model that takes any input size: the size it was trained at and
each image at its own size, merged by ball size.

A 320-px model sees large balls well at 320 and small ones only when a large frame is fed at its own
resolution; each pass alone loses one end of the size range. The rule runs both passes (one, when an
image's own size is the training size) and keeps from the training-size pass the boxes of at least
`DEFAULT_BAND[0]` px at its input, from the native pass those of at most `DEFAULT_BAND[1]` px (larger
balls are left to the training size), then NMS (`infer.scale_merge`'s `size` rule). On the five leave-one-source-out folds and two training seeds it
scored a held-out mean mAP50 of 0.526 / 0.514, against 0.506 / 0.492 for the native size alone and
0.481 / 0.464 for the training size alone, large balls kept (0.872 / 0.830 against 0.752 / 0.712
native) and tiny ones found (README, *Photos from sources the model never saw*).

It applies only where nothing else was asked for: no input size, no tiles, no scales, and (scoring)
no `type_min_score`; a fixed-size exported graph runs at its own size.
"""

from __future__ import annotations

from mhyolo.infer.multiscale import NATIVE_SCALE, ScaleSettings
from mhyolo.infer.scale_merge import MergeOptions

DEFAULT_BAND = (8.0, 96.0)  # box side at a pass's input, px (see the module docstring)
DEFAULT_SCALES = ScaleSettings(sizes=(1, NATIVE_SCALE), merge="size",
                               options=MergeOptions(band=DEFAULT_BAND, then="nms"))


def default_scales(takes_any_shape: bool, asked_size: int | str | None, whole_images: bool,
                   allowed: bool = True) -> ScaleSettings | None:
    """`DEFAULT_SCALES` when nothing else was asked for (`asked_size` None, `whole_images`, `allowed`)
    on a model that takes any input shape; None otherwise."""
    if takes_any_shape and asked_size is None and whole_images and allowed:
        return DEFAULT_SCALES
    return None

