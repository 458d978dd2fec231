"""`RUN/report.html`: one self-contained page a person opens to see what a run produced.

The page is a list of registered sections (`sections.SECTIONS`, one module each under
`sections/`): each one says whether the run holds its inputs (a pipeline's `report.json`, a
benchmark, a cross-validation, a dataset build, training run folders) and renders its HTML;
sections without inputs are skipped, so one builder serves pipeline, cross-validation,
benchmark and plain training folders. Tables are rendered from the JSON files, figures are the
run's PNGs inlined as data URIs, and the CSS is inline: the file needs no network, no
JavaScript and no other file to be read.
"""

from mhyolo.report.page import render_page, write_html_report

__all__ = ["render_page", "write_html_report"]
