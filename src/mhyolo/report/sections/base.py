"""What a section of the page is (`Section`), the registry in page order (`SECTIONS`, filled by
`@register`) and the header's number format: what every section module builds on."""

from __future__ import annotations

from typing import Any, ClassVar

from mhyolo.report.html import DASH, Html
from mhyolo.report.run_folder import RunFolder


class Section:
    """One part of the page; `key` is its anchor, `kind` names the run when this section's
    input is what the run is about (the first available one names the page)."""

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    kind: ClassVar[str | None] = None

    def __init__(self, run: RunFolder) -> None:
        self.run = run

    def available(self) -> bool:
        raise NotImplementedError

    def facts(self) -> dict[str, str]:
        """Key figures for the header (label -> value); the first section to name a label wins."""
        return {}

    def render(self) -> Html:
        raise NotImplementedError


SECTIONS: list[type[Section]] = []


def register(cls: type[Section]) -> type[Section]:
    if not cls.key or any(s.key == cls.key for s in SECTIONS):
        raise ValueError(f"section {cls.__name__}: key {cls.key!r} is empty or taken")
    SECTIONS.append(cls)
    return cls


def score(value: Any) -> str:
    """A header figure at three decimals; anything but a number is a dash."""
    return DASH if not isinstance(value, (int, float)) else f"{value:.3f}"
