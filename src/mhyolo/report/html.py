"""Small HTML builders for the page: escaped text, tables that scroll sideways on a narrow
screen, figures with inlined images, number cells. Everything returned is an `Html` string,
which is never escaped again; anything else is text and is."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mhyolo.report.images import inline_image

DASH = "–"
WIDE_PX = 1000  # figures wider than this take a whole row of a figure grid (curves, matrices, photo grids)


class Html(str):
    """Markup that is already safe to insert; adding text to it escapes the text."""

    def __add__(self, other: Any) -> Html:
        return Html(str.__add__(self, esc(other)))


def esc(value: Any) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Any]) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, content: Any = "", **attrs: Any) -> Html:
    """`<name attrs>content</name>`; attribute names ending in `_` lose it (`class_`)."""
    attributes = "".join(f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
                         for key, value in attrs.items() if value is not None)
    return Html(f"<{name}{attributes}>{esc(content)}</{name}>")


def code(text: Any) -> Html:
    return tag("code", text)


def number(value: Any, digits: int = 3) -> str:
    """A float at `digits` decimals; None and NaN are a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return str(value)


def signed(value: Any, digits: int = 3) -> str:
    return DASH if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}f}"


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], row_classes: Sequence[str | None] | None = None,
          text_columns: Sequence[int] = ()) -> Html:
    """A table inside a box that scrolls sideways, so a wide table never widens the page;
    `text_columns` wrap (notes), the others keep numbers on one line."""
    head = tag("tr", join(tag("th", _words(h), scope="col") for h in headers))
    body = []
    for i, row in enumerate(rows):
        cells = [tag("th" if k == 0 else "td", cell, scope="row" if k == 0 else None,
                     class_="text" if k in text_columns else None) for k, cell in enumerate(row)]
        body.append(tag("tr", join(cells), class_=row_classes[i] if row_classes else None))
    return tag("div", tag("table", tag("thead", head) + tag("tbody", join(body))), class_="scroll")


def _words(label: Any) -> Html:
    """A header label that wraps between its words only, never inside "mAP50-95"."""
    if isinstance(label, Html):
        return label
    return Html(" ".join(f'<span class="word">{esc(word)}</span>' for word in str(label).split()))


def figure(path: Path, caption: str, shown_as: str | None = None) -> Html:
    """The image inlined, captioned, with the file it came from (relative to the run when given)."""
    image = inline_image(path)
    origin = shown_as or path.name
    size = f"{image.source_bytes / 1e6:.1f} MB" if image.source_bytes >= 1e6 else f"{image.source_bytes / 1e3:.0f} kB"
    note = f" (inlined as JPEG; the PNG, {size}, is in the run folder)" if image.mime == "image/jpeg" \
        and path.suffix.lower() == ".png" else ""
    img = Html(f'<img src="{image.uri}" width="{image.width}" height="{image.height}" '
               f'alt="{html.escape(caption, quote=True)}">')
    wide = "wide" if image.width > WIDE_PX else None
    return tag("figure", img + tag("figcaption", join([caption, " ", code(origin), note])), class_=wide)


def figures(items: Sequence[Html]) -> Html:
    """Figures side by side where the screen is wide enough, wide ones on a row of their own."""
    return tag("div", join(items), class_="figures")


def paragraph(*parts: Any) -> Html:
    return tag("p", join(parts))
