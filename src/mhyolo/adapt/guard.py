"""Evaluate and filter, for adaptation: the adapted model replaces the given one only if it does not lose
more than `max_val_drop` mAP50 on the labelled val split.

Measured on the held-out sources (README, *Adapting to your own footage*): where adaptation hurt the
target (tennis: 0.803 -> 0.744 mAP50 on its test half), the labelled val split fell too (0.545 -> 0.527);
where it helped (basketball: 0.576 -> 0.668), the labelled val rose (0.578 -> 0.608). The labelled split
is the only score a run has without the target's labels, so a fall there is the warning it can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_VAL_DROP = 0.01  # about one box of ~150 val images: a larger fall is beyond the noise


@dataclass(frozen=True)
class Decision:
    adapted: bool  # the adapted model is the run's model
    reason: str  # why, in a sentence the report prints


def decide(evaluation: dict[str, Any] | None, max_val_drop: float | None) -> Decision:
    """Keep the adapted model unless the labelled val mAP50 (`evaluation`'s `before` / `after`) fell by more
    than `max_val_drop` (None: no check; no labelled val split: nothing to check against)."""
    if max_val_drop is None:
        return Decision(True, "kept without a check (--max-val-drop off)")
    if evaluation is None:
        return Decision(True, "kept unchecked: no labelled val split to check it on (give --labelled)")
    before, after = float(evaluation["before"]["map50"]), float(evaluation["after"]["map50"])
    if after < before - max_val_drop:
        return Decision(False, f"its mAP50 on the labelled val split fell from {before:.3f} to {after:.3f}, more "
                               f"than --max-val-drop {max_val_drop:g}: the given model is kept (the adapted one stays "
                               "in the round's student folder)")
    return Decision(True, f"labelled val mAP50 {before:.3f} -> {after:.3f} (allowed fall {max_val_drop:g})")
