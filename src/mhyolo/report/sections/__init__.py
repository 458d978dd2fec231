"""The page's sections, in page order. A new kind of result gets its own `Section` subclass in
a module of this package, registered with `@register`: it says whether the run holds its
inputs, what it adds to the header's key figures, and renders its HTML. Sections whose inputs
are absent are skipped. `Section`, `register` and `SECTIONS` live in `base`, which the section
modules import; the modules are imported below, in page order."""

from __future__ import annotations

from mhyolo.report.sections.base import SECTIONS, Section, register, score  # noqa: F401

# Importing a module registers its section: this order is the page's order.
from mhyolo.report.sections import (  # noqa: F401
    stages, distillation, benchmark, crossval, dataset, training,
)
