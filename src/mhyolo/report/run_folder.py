"""Reading a run folder for the page: its JSON and YAML files (errors name file and line),
its training run folders, and the time its newest result was written."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mhyolo.errors import DataError
from mhyolo.pipeline.run_report import REPORT_JSON, RunReport

RESULTS_CSV = "results.csv"  # marks a training run folder (`mhyolo train --out`)
SKIP_FOLDERS = ("data",)  # dataset folders: thousands of images, never a training run


class RunFolder:
    """One run folder; files are read once and remembered, and the newest one dates the page."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a run folder (no such directory)")
        self._cache: dict[Path, Any] = {}
        self._newest = 0.0

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def file(self, relative: str | Path) -> Path | None:
        """`RUN/relative` when it is a file, else None."""
        path = self.path / relative
        return path if path.is_file() else None

    def note(self, path: Path) -> None:
        """Count `path` among the run's results that date the page."""
        self._newest = max(self._newest, path.stat().st_mtime)

    def json(self, relative: str | Path) -> Any:
        """The parsed `RUN/relative`, or None when it is absent."""
        return self._read(relative, self._parse_json)

    def yaml(self, relative: str | Path) -> Any:
        return self._read(relative, self._parse_yaml)

    def _read(self, relative: str | Path, parse) -> Any:
        path = self.path / relative
        if path not in self._cache:
            if not path.is_file():
                return None
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: cannot read: {exc}") from exc
            self._cache[path] = parse(path, text)
            self.note(path)
        return self._cache[path]

    @staticmethod
    def _parse_json(path: Path, text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None

    @staticmethod
    def _parse_yaml(path: Path, text: str) -> Any:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise DataError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None

    def mapping(self, relative: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """A JSON object with the `required` keys, or None when the file is absent."""
        data = self.json(relative)
        if data is None:
            return None
        if not isinstance(data, dict):
            raise DataError(f"{self.path / relative}: expected a JSON object, got {type(data).__name__}")
        missing = [key for key in required if key not in data]
        if missing:
            raise DataError(f"{self.path / relative}: missing {', '.join(repr(k) for k in missing)}")
        return data

    def pipeline_report(self) -> RunReport | None:
        """`RUN/report.json` of `mhyolo pipeline`, or None when the run has none (absent, or another
        command's report without stage scores)."""
        data = self.json(REPORT_JSON)
        if not isinstance(data, dict) or "models" not in data:
            return None
        return RunReport.from_json(data, self.path / REPORT_JSON)

    def training_folders(self) -> list[Path]:
        """The run itself when it is a training run, else the training runs one or two levels
        down (a pipeline's stages, a cross-validation's `<fold>/train`), by path."""
        if (self.path / RESULTS_CSV).is_file():
            return [self.path]
        found = []
        for child in sorted(p for p in self.path.iterdir() if p.is_dir()):
            if child.name in SKIP_FOLDERS or child.name.startswith("."):
                continue
            if (child / RESULTS_CSV).is_file():
                found.append(child)
                continue
            found += sorted(p.parent for p in child.glob(f"*/{RESULTS_CSV}")
                            if p.parent.name not in SKIP_FOLDERS)
        return found

    def date(self) -> str:
        """When the newest file read so far was written (local time)."""
        if not self._newest:
            return "–"
        return datetime.fromtimestamp(self._newest).strftime("%Y-%m-%d %H:%M")
