"""When to stop training early: a decision taken only after a validation, on the process that validated.

Patience counts epochs since the best validated fitness, so with `val_every > 1` an epoch without a
validation never stops a run (it says nothing new about fitness), and under DDP only rank 0 validates:
its decision is broadcast, so every rank leaves the loop at the same epoch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStopping:
    patience: int  # epochs since the best validation before stopping; 0 never stops
    best_epoch: int = -1  # the epoch of the best validation so far (-1: none in this run)

    def update(self, epoch: int, improved: bool | None) -> bool:
        """Record epoch `epoch` (`improved`: None when it was not validated); True when training should stop."""
        if improved:
            self.best_epoch = epoch
        if improved is None or self.patience <= 0:
            return False
        return epoch - self.best_epoch >= self.patience
