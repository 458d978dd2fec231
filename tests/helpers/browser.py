"""Headless Chromium for tests of the HTML report: what a browser loads and lays out.

The page is opened inside an iframe of the wanted width (a headless window is at least 500 px
wide, an iframe is exactly as wide as it is told, and its media queries follow it). A copy of
the page carries a small script that, once everything has loaded, posts what it measured to
the frame around it, which writes it into its DOM; `--dump-dom` hands that back.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=15000")
TIMEOUT_S = 180  # a hung browser fails the test instead of blocking the suite

MEASURE = """<script>
addEventListener('load', () => {
  const images = [...document.images];
  const boxes = [...document.querySelectorAll('.scroll')];
  parent.postMessage(JSON.stringify({
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    viewport: innerWidth,
    page_width: document.documentElement.scrollWidth,
    widest_image: Math.max(0, ...images.map(i => i.getBoundingClientRect().width)),
    text_chars: document.body.innerText.trim().length,
    tables: boxes.length,
    tables_scrolling: boxes.filter(b => b.scrollWidth > b.clientWidth + 1).length,
  }), '*');
});
</script>"""
COLLECT = """<script>
addEventListener('message', e => {
  const out = document.createElement('pre'); out.id = 'measured'; out.textContent = e.data;
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    """`$MHYOLO_CHROMIUM`, else the first Chromium or Chrome on the PATH."""
    if os.environ.get("MHYOLO_CHROMIUM"):
        return os.environ["MHYOLO_CHROMIUM"]
    return next((path for path in map(shutil.which, NAMES) if path), None)


def _run(browser: str, profile: Path, args: list[str]) -> str:
    command = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _frame(page: Path, width: int, height: int, script: str = "") -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">'
            f'<iframe src="{page.name}" style="border:0;display:block;width:{width}px;height:{height}px">'
            f"</iframe>{script}</body></html>")


def measure(browser: str, page: Path, width: int, height: int, work: Path) -> dict[str, Any]:
    """Load `page` at `width` x `height` CSS pixels; what the measuring script saw."""
    work.mkdir(parents=True, exist_ok=True)
    text = page.read_text(encoding="utf-8")
    measured = work / f"measured-{page.name}"
    measured.write_text(text.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    frame = work / f"frame-{width}.html"
    frame.write_text(_frame(measured, width, height, COLLECT), encoding="utf-8")
    dom = _run(browser, work / "profile", [f"--window-size={max(width, 800)},{height}", "--dump-dom",
                                           frame.as_uri()])
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError(f"the page at {width} px never reported (no load event?): {dom[-1000:]}")
    return json.loads(html.unescape(found.group(1)))


def screenshot(browser: str, page: Path, width: int, height: int, out: Path) -> Path:
    """A PNG of the top `height` pixels of `page` laid out `width` pixels wide."""
    frame = page.with_name(f".frame-{width}-{page.name}")
    frame.write_text(_frame(page, width, height), encoding="utf-8")
    try:
        _run(browser, out.parent / "profile", [f"--window-size={width},{height}", f"--screenshot={out}",
                                               frame.as_uri()])
    finally:
        frame.unlink(missing_ok=True)
    return out
