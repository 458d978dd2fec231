"""Distillation: the distillation stage's evaluate-and-filter, every group's fitness over the seeds and the choice."""

from __future__ import annotations

from typing import Any

from mhyolo.report.html import DASH, Html, join, number, paragraph, table, tag
from mhyolo.report.sections import Section, register


@register
class Distillation(Section):
    """The distillation stage's evaluate-and-filter: every group's fitness over the seeds and the choice."""

    key, title, kind = "distill", "Distillation", None

    def _decision(self) -> dict[str, Any] | None:
        report = self.run.json("report.json")
        decision = report.get("distill") if isinstance(report, dict) else None
        return decision if isinstance(decision, dict) and isinstance(decision.get("groups"), dict) else None

    def available(self) -> bool:
        return self._decision() is not None

    def facts(self) -> dict[str, str]:
        decision = self._decision() or {}
        return {"distillation": str(decision.get("chosen", DASH))}

    def render(self) -> Html:
        decision = self._decision() or {}
        chosen = decision.get("chosen")
        headers = ["model", "runs", "fitness per seed", "mean", "spread"]
        rows, classes = [], []
        for name, group in decision["groups"].items():
            runs = group.get("runs") or []
            rows.append([name + (" (kept)" if name == chosen else ""), ", ".join(str(r) for r in runs),
                         ", ".join(number(v, 4) for v in group.get("fitness") or []),
                         number(group.get("mean"), 4), number(group.get("spread"), 4)])
            classes.append("final" if name == chosen else None)
        return join([paragraph("The student without distillation and with each distillation variant, the same "
                               "data, epochs and seeds, scored on the validation split; fitness is 0.1 x mAP50 + "
                               "0.9 x mAP50-95 of the typed mAP (detection and type together). A distilled "
                               "student is kept only if its mean beats the undistilled one's by more than the "
                               "seed-to-seed spread."),
                     table(headers, rows, classes), paragraph(tag("strong", "Choice: "), decision.get("reason", ""))])
