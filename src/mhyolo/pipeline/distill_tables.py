"""The distillation stage's tables, shared by `report.md` and the HTML page: every group's fitness over
the seeds, and seed 001's per-class table (Table IV) for our types: each type's typed AP for the teacher,
the undistilled student and each variant, as mean (max - min) over the seeds."""

from __future__ import annotations

from statistics import mean
from typing import Any

from mhyolo.pipeline.distill import TEACHER_RUN

METRICS = (("ap50", "typed_map50", "AP50"), ("ap50_95", "typed_map50_95", "AP50-95"))


def spread_stats(values: list[float | None]) -> dict[str, Any]:
    """The values over seeds, their mean and spread (max - min; None for fewer than two known values)."""
    known = [v for v in values if v is not None]
    return {"values": values, "mean": mean(known) if known else None,
            "spread": max(known) - min(known) if len(known) > 1 else None}


def spread_cell(stat: dict[str, Any]) -> str:
    """`mean (spread)` over seeds; the mean alone for one seed, a dash for none."""
    if stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.3f}" + (f" ({stat['spread']:.3f})" if stat.get("spread") is not None else "")


def _stat(values: list[float]) -> str:
    return spread_cell(spread_stats(values))


def _groups(rows: dict[str, dict[str, Any]], decision: dict[str, Any]) -> dict[str, list[str]]:
    groups = {"teacher": [TEACHER_RUN]} if TEACHER_RUN in rows else {}
    groups.update({name: list(group.get("runs") or []) for name, group in decision["groups"].items()})
    return groups


def fitness_table(decision: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    chosen = decision.get("chosen")
    headers = ["model", "runs", "fitness per seed", "mean", "spread"]
    rows = [[name + (" (kept)" if name == chosen else ""), ", ".join(str(r) for r in group.get("runs") or []),
             ", ".join(f"{v:.4f}" for v in group.get("fitness") or []),
             f"{group['mean']:.4f}" if group.get("mean") is not None else "–",
             f"{group['spread']:.4f}" if group.get("spread") is not None else "–"]
            for name, group in decision["groups"].items()]
    return headers, rows


def per_type_table(rows: dict[str, dict[str, Any]], decision: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows: each group's typed AP50 and AP50-95; columns: all types (the typed mAP), then each type."""
    types: list[str] = []
    for row in rows.values():
        for name in row.get("typed_per_type") or {}:
            if name not in types:
                types.append(name)
    headers = ["model", "metric", "all", *types]
    table = []
    for group, runs in _groups(rows, decision).items():
        scored = [rows[r] for r in runs if r in rows]
        for key, total, label in METRICS:
            cells = [_stat([r[total] for r in scored if r.get(total) is not None])]
            for name in types:
                cells.append(_stat([r["typed_per_type"][name][key] for r in scored
                                    if ((r.get("typed_per_type") or {}).get(name) or {}).get(key) is not None]))
            table.append([group, label, *cells])
    return headers, table


def distill_markdown(rows: dict[str, dict[str, Any]], decision: dict[str, Any]) -> str:
    from mhyolo.data.report import format_table

    lines = ["## Distillation (evaluate and filter)", "", format_table(*fitness_table(decision)), "",
             f"Choice: {decision.get('reason', '')}", "",
             "Typed AP per ball type on the validation split, mean (max − min) over the seeds:", "",
             format_table(*per_type_table(rows, decision)), ""]
    return "\n".join(lines)
