"""Where the time of a data command goes: seconds per named stage (scan, hash, dedup, write, ...).

`build_dataset` and `verify_dataset` run each stage inside `stages(name)`; a stage that runs
several times (once per source or split) adds up. The scale benchmark subclasses `Stages`
to measure memory at the same boundaries.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stages:
    """Seconds spent in each stage, in the order the stages first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.prefix = ""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        name = self.prefix + name
        self.started(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.finished(name)

    def started(self, name: str) -> None:
        """Called as stage `name` begins (subclasses measure here)."""

    def finished(self, name: str) -> None:
        """Called as stage `name` ends."""

    def within(self, prefix: str) -> Stages:
        """A view recording into the same place with names prefixed (`verify/hash` for the check after a build)."""
        view = copy.copy(self)  # shallow: the records are shared
        view.prefix = f"{self.prefix}{prefix}/"
        return view
