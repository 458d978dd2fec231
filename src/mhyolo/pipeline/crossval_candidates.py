"""A distillation cross-validated: every run of every fold scored on its held-out source, summed up
per candidate (teacher, undistilled student, each variant) and decided by the same
evaluate-and-filter rule as the pipeline, but on the sources the models never saw.

A run's held-out score is the plain mean over the folds (every source weighs the same, as in the
main table); a candidate's is the mean over its seeds, with their spread (max - min) beside it.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from mhyolo.pipeline.config import STUDENT, DistillConfig
from mhyolo.pipeline.crossval_report import mean_row
from mhyolo.eval.results import fitness
from mhyolo.pipeline.distill import TEACHER_RUN, decide, run_name
from mhyolo.pipeline.distill_tables import spread_stats

TEACHER = "teacher"
METRICS = ("map50", "map50_95", "cls_accuracy", "typed_map50", "fitness")


def _run_scores(folds: dict[str, Any], run: str, size: str) -> dict[str, Any] | None:
    """One run's held-out scores per fold and their mean (None until every fold has scored it)."""
    per_fold = {}
    for source, fold in folds.items():
        row = ((fold.get("runs") or {}).get(run) or {}).get("scores", {}).get(size)
        if row is None:
            return None
        per_fold[source] = {**row, "fitness": fitness(row)}
    means = mean_row(list(per_fold.values()))
    means["fitness"] = mean(r["fitness"] for r in per_fold.values())
    seconds = [((folds[s].get("runs") or {}).get(run) or {}).get("train_seconds") for s in folds]
    return {"per_fold": per_fold, "mean": means,
            "train_seconds": sum(seconds) if all(isinstance(x, (int, float)) for x in seconds) else None}


def distill_on_held_out(folds: dict[str, Any], distill: DistillConfig, size: str) -> dict[str, Any]:
    """Each candidate's held-out figures (mean and spread over seeds, and per source) and the
    evaluate-and-filter decision taken on them."""
    groups: dict[str, list[str]] = {TEACHER: [TEACHER_RUN]}
    for group in (STUDENT, *distill.variants):
        groups[group] = [run_name(group, seed) for seed in distill.seeds]
    scores = {run: _run_scores(folds, run, size) for runs in groups.values() for run in runs}
    summary: dict[str, Any] = {"imgsz": int(size), "seeds": list(distill.seeds), "candidates": {}}
    for group, runs in groups.items():
        done = [scores[r] for r in runs if scores[r] is not None]
        if not done:
            continue
        summary["candidates"][group] = {
            "runs": [r for r in runs if scores[r] is not None],
            **{key: spread_stats([s["mean"][key] for s in done]) for key in METRICS},
            "per_fold": {source: {key: spread_stats([s["per_fold"][source].get(key) for s in done])["mean"]
                                  for key in METRICS} for source in folds},
            "train_seconds": spread_stats([s["train_seconds"] for s in done])["mean"],
        }
    if all(scores[r] is not None for g, runs in groups.items() if g != TEACHER for r in runs):
        rows = {run: {"fitness": s["mean"]["fitness"], "weights": None} for run, s in scores.items() if s}
        decision = decide(rows, distill, fitness=lambda row: row["fitness"])
        summary["decision"] = {"chosen": decision.chosen, "reason": decision.reason}
    return summary
