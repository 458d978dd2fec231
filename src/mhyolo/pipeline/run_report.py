"""`RUN/report.json` as one typed object: what `mhyolo pipeline` writes and the page reads back.

The runner fills a `RunReport`, the Markdown and the page's sections read the same fields, so a figure
the pipeline adds is a field here, not a key two packages spell each on their own. Reading checks each
field's type and names the file and the field that is wrong; keys a later version wrote are kept, so a
report read and written again loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhyolo.errors import DataError

REPORT_JSON = "report.json"


@dataclass
class RunReport:
    """Every stage's model scored on one split (`models`: stage -> results row), the run's input size,
    the model it ships and the stage it came from; the optional parts only when their stage ran."""

    models: dict[str, dict[str, Any]]
    imgsz: int | None = None
    final_model: str | None = None
    final_stage: str | None = None
    distill: dict[str, Any] | None = None  # the evaluate-and-filter decision (`DistillDecision.to_dict`)
    head_overhead: float | None = None  # PyTorch latency of detector + type head over the detector alone
    image_head_overhead: float | None = None
    benchmark: dict[str, Any] | None = None  # the benchmark's files: markdown, json, plot
    unknown: dict[str, Any] = field(default_factory=dict, repr=False)  # keys this version does not know

    def final_row(self) -> dict[str, Any]:
        """The final stage's scores (empty when it was not scored)."""
        return self.models.get(self.final_stage or "", {}) if self.final_stage else {}

    def to_json(self) -> dict[str, Any]:
        """The report as written: `models` first, then each part that is set, in the fields' order."""
        data: dict[str, Any] = {"models": self.models}
        for item in dataclasses.fields(self):
            if item.name in ("models", "unknown"):
                continue
            value = getattr(self, item.name)
            if value is not None:
                data[item.name] = value
        return {**data, **self.unknown}

    def write(self, run: Path) -> Path:
        path = Path(run) / REPORT_JSON
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> RunReport:
        """A report from its parsed JSON; a wrong type names the file and the field."""
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "models" not in data:
            raise DataError(f"{where}: missing 'models' (not a pipeline report)")
        models = data["models"]
        if not isinstance(models, dict) or not all(isinstance(row, dict) for row in models.values()):
            raise DataError(f"{where}: 'models' must map stage names to scores")
        known = {item.name for item in dataclasses.fields(cls)} - {"unknown"}
        values: dict[str, Any] = {"models": models}
        for name, kinds in _FIELD_TYPES.items():
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise DataError(f"{where}: '{name}' must be {_KIND_WORDS[kinds]}, got {type(value).__name__}")
            values[name] = value
        return cls(**values, unknown={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, path: Path) -> RunReport:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        return cls.from_json(data, path)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "imgsz": int, "final_model": str, "final_stage": str, "distill": dict,
    "head_overhead": (int, float), "image_head_overhead": (int, float), "benchmark": dict}
_KIND_WORDS: dict[Any, str] = {int: "a whole number", str: "a string", dict: "a JSON object",
                               (int, float): "a number"}
