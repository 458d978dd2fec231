"""The whole page: header (run name, date, model, key figures), a contents line, the
available sections, inline CSS. Written to a temporary file first and moved into place, so
an error never leaves half a page or removes the previous one."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from mhyolo.errors import DataError
from mhyolo.report.html import Html, join, tag
from mhyolo.report.run_folder import RunFolder
from mhyolo.report.sections import base as registry  # the package registers every section, in page order
from mhyolo.report.sections.base import Section
from mhyolo.version import __version__

HTML_NAME = "report.html"

# Readable from a 320 px phone to a laptop: one column at most 1100 px wide, images scale
# down with the column, tables scroll inside their own box instead of widening the page.
CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1f2328;background:#fff}
.wrap{max-width:1100px;margin:0 auto;padding:0 16px}
header{background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:20px 0 12px}
.kind{margin:0;color:#59636e;font-size:.8rem;text-transform:uppercase;letter-spacing:.06em}
h1{margin:2px 0 4px;font-size:1.7rem;line-height:1.2;overflow-wrap:anywhere}
h2{margin:32px 0 8px;font-size:1.35rem;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{margin:20px 0 6px;font-size:1.05rem}
.meta,.muted,figcaption,footer{color:#59636e}
.meta{margin:0;font-size:.9rem;overflow-wrap:anywhere}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:8px;margin:14px 0 0}
.fact{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;min-width:0}
.fact dt{font-size:.75rem;color:#59636e}
.fact dd{margin:0;font-weight:600;overflow-wrap:anywhere}
nav{margin:12px 0 0;font-size:.9rem}
nav a{color:#0969da;margin-right:14px;text-decoration:none;white-space:nowrap}
code{font:.85em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f6f8fa;padding:1px 4px;
 border-radius:4px;overflow-wrap:anywhere}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:8px 0 14px;border:1px solid #d0d7de;
 border-radius:6px;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid #e6e9ed;text-align:right;white-space:nowrap;vertical-align:top}
thead th{background:#f6f8fa;font-weight:600;white-space:normal;vertical-align:bottom;min-width:4.5em}
tbody th{text-align:left;font-weight:600}
thead th:first-child{text-align:left}
.word{white-space:nowrap}
tbody th,thead th:first-child{position:sticky;left:0;z-index:1;background:#fff;box-shadow:1px 0 0 #e6e9ed}
thead th:first-child{background:#f6f8fa}
td.text{white-space:normal;text-align:left;min-width:14em}
tr.final,tr.mean,tr.final th,tr.mean th{background:#ddf4ff}
tr.skipped{color:#59636e}
.delta{font-size:.8em;color:#59636e}
tbody th code{font-weight:400;font-size:.75em}
ol.notes{font-size:.85rem;margin:0 0 14px;padding-left:1.6em}
figure{margin:14px 0 22px;min-width:0}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr));column-gap:20px}
.figures figure.wide{grid-column:1/-1}
img{display:block;width:100%;max-width:100%;height:auto;border:1px solid #d0d7de;border-radius:4px;background:#fff}
figcaption{font-size:.85rem;margin-top:4px}
details.run{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:10px 0}
details.run[open]>summary{margin-bottom:8px}
summary{cursor:pointer}
.run-name{font-weight:600}
.muted{font-size:.85rem}
footer{font-size:.8rem;margin-top:36px;padding-bottom:24px;overflow-wrap:anywhere}
@media (max-width:600px){body{font-size:15px}h1{font-size:1.35rem}th,td{padding:4px 7px}
 .facts{grid-template-columns:repeat(2,minmax(0,1fr))}details.run{padding:6px 8px}}
@media print{details.run{border:0}nav{display:none}}
"""


def available_sections(run: RunFolder) -> list[Section]:
    return [section for section in (cls(run) for cls in registry.SECTIONS) if section.available()]


def render_page(run_path: Path) -> str:
    """The page of `run_path`; refuses a folder that holds nothing a section can show."""
    run = RunFolder(run_path)
    sections = available_sections(run)
    if not sections:
        raise DataError(f"{run.path}: nothing to report: no pipeline report.json, benchmark.json, crossval.json, "
                        "dataset report or training run (results.csv) found")
    facts: dict[str, str] = {}
    for section in sections:
        for label, value in section.facts().items():
            facts.setdefault(label, value)
    bodies = [join([tag("h2", section.title, id=section.key), section.render()]) for section in sections]
    kind = next((s.kind for s in sections if s.kind), "run")
    header = join([
        tag("p", f"mhyolo {kind}", class_="kind"), tag("h1", run.name),
        tag("p", f"results of {run.date()} · {run.path}", class_="meta"),
        tag("dl", join(tag("div", tag("dt", k) + tag("dd", v), class_="fact") for k, v in facts.items()),
            class_="facts"),
        tag("nav", join(tag("a", s.title, href=f"#{s.key}") for s in sections), aria_label="sections"),
    ])
    written = datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = f"Written by mhyolo {__version__} on {written} from the files in {run.path}."
    return join([
        Html("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"),
        tag("title", f"{run.name}: mhyolo {kind}"), Html("\n"), tag("style", Html(CSS)),
        Html("\n</head>\n<body>\n"), tag("header", tag("div", header, class_="wrap")), Html("\n"),
        tag("main", join(bodies), class_="wrap"), Html("\n"), tag("footer", footer, class_="wrap"),
        Html("\n</body>\n</html>\n"),
    ])


def write_html_report(run_path: Path, out: Path | None = None) -> Path:
    """Write the page to `out` (default `RUN/report.html`) and return its path."""
    run_path = Path(run_path)
    out = Path(out) if out is not None else run_path / HTML_NAME
    text = render_page(run_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
