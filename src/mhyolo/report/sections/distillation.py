"""Distillation: the distillation stage's evaluate-and-filter, every group's fitness over the seeds and the choice."""

from __future__ import annotations

from typing import Any

from mhyolo.report.html import DASH, Html, join, paragraph, table, tag
from mhyolo.report.sections.base import Section, register


@register
class Distillation(Section):
    """The distillation stage's evaluate-and-filter: every group's fitness over the seeds and the choice."""

    key, title, kind = "distill", "Distillation", None

    def _decision(self) -> dict[str, Any] | None:
        report = self.run.pipeline_report()
        decision = report.distill if report is not None else None
        return decision if isinstance(decision, dict) and isinstance(decision.get("groups"), dict) else None

    def available(self) -> bool:
        return self._decision() is not None

    def facts(self) -> dict[str, str]:
        decision = self._decision() or {}
        return {"distillation": str(decision.get("chosen", DASH))}

    def render(self) -> Html:
        from mhyolo.pipeline.distill_tables import fitness_table, per_type_table

        decision = self._decision() or {}
        chosen = decision.get("chosen")
        headers, rows = fitness_table(decision)
        classes = ["final" if name == chosen else None for name in decision["groups"]]
        report = self.run.pipeline_report()
        models = report.models if report is not None else None
        parts = [paragraph("The student without distillation and with each distillation variant, the same "
                           "data, epochs and seeds, scored on the validation split; fitness is 0.1 x mAP50 + "
                           "0.9 x mAP50-95 of the typed mAP (detection and type together). A distilled "
                           "student is kept only if its mean beats the undistilled one's by more than the "
                           "seed-to-seed spread."),
                 table(headers, rows, classes), paragraph(tag("strong", "Choice: "), decision.get("reason", ""))]
        if isinstance(models, dict):
            type_headers, type_rows = per_type_table(models, decision)
            if len(type_headers) > 3:  # the models type their balls
                parts += [tag("h3", "Typed AP per ball type"),
                          paragraph("Each type's AP within the typed mAP, mean (max − min) over the seeds."),
                          table(type_headers, type_rows)]
        return join(parts)
