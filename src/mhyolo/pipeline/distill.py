"""The distillation stage: train a teacher, the student without distillation and the student with each
distillation variant (same data, epochs and seeds), then keep a distilled model only if it beats the
undistilled one by more than the seeds' own spread (seed 001's "evaluate and filter").

Every run is an ordinary training stage in the run folder (`distill/teacher`, `distill/student-s0`,
`distill/imitation-s0`, ...), so it resumes like the others and is scored on the same validation
split; `decide` only reads those scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import mean
from typing import Any

from mhyolo.errors import ConfigError
from mhyolo.eval.results import fitness
from mhyolo.pipeline.config import STUDENT, DistillConfig

def run_name(group: str, seed: int) -> str:
    return f"distill/{group}-s{seed}"


TEACHER_RUN = "distill/teacher"




@dataclass
class GroupScore:
    runs: list[str]
    fitness: list[float]

    @property
    def mean(self) -> float:
        return mean(self.fitness)

    @property
    def spread(self) -> float:
        return max(self.fitness) - min(self.fitness)

    @property
    def best_run(self) -> str:
        return self.runs[max(range(len(self.runs)), key=lambda i: self.fitness[i])]


@dataclass
class DistillDecision:
    chosen: str  # STUDENT or a variant name
    weights: str  # the chosen group's best seed
    reason: str
    groups: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(rows: dict[str, dict[str, Any]], distill: DistillConfig,
           fitness: Callable[[dict[str, Any]], float] = fitness) -> DistillDecision:
    """The best variant by mean fitness over the seeds is kept only if its mean beats the student's
    by more than the larger of the two seed-to-seed spreads (with one seed there is no spread to
    measure and any gain counts; the reason says so). `fitness` reads a run's row: the val split's
    by default, the held-out sources' in cross-validation."""
    groups: dict[str, GroupScore] = {}
    for group in (STUDENT, *distill.variants):
        runs = [run_name(group, seed) for seed in distill.seeds]
        missing = [name for name in runs if name not in rows]
        if missing:
            raise ConfigError(f"distillation: no scores for {', '.join(missing)}")
        groups[group] = GroupScore(runs, [fitness(rows[name]) for name in runs])
    student = groups[STUDENT]
    best = max(distill.variants, key=lambda name: groups[name].mean)
    margin = max(student.spread, groups[best].spread)
    gain = groups[best].mean - student.mean
    seeds = f"{len(distill.seeds)} seed(s)"
    noise = (f"seed-to-seed spread {margin:.4f}" if len(distill.seeds) > 1
             else "one seed: no spread measured, so a gain within noise cannot be ruled out")
    if gain > margin:
        chosen = best
        reason = (f"{best} beats the undistilled student: mean fitness {groups[best].mean:.4f} against "
                  f"{student.mean:.4f} over {seeds} (+{gain:.4f} > {noise})")
    else:
        chosen = STUDENT
        reason = (f"no distillation beats the undistilled student by more than the noise: best {best} "
                  f"{groups[best].mean:.4f} against {student.mean:.4f} over {seeds} ({gain:+.4f}; {noise})")
    summary = {name: {"runs": g.runs, "fitness": g.fitness, "mean": g.mean, "spread": g.spread,
                      "best_run": g.best_run, "weights": rows[g.best_run].get("weights")}
               for name, g in groups.items()}
    return DistillDecision(chosen=chosen, weights=str(rows[groups[chosen].best_run]["weights"]), reason=reason,
                           groups=summary)
