"""Latency and throughput measured the same way for every runtime.

Two ways, both robust to load from other processes that drifts over a run:

* `interleaved_times`: one call of each candidate per round (the scripts under `benchmarks/` that
  compare variants of one runtime);
* `blocked_times`, what `mhyolo benchmark` uses: each format runs as it does for a user, its calls in
  blocks of consecutive calls (its weights in the caches, its own threads awake), format after format,
  in a few rounds whose order is reversed every other round, with a pause before each format so the
  previous runtime's spin-waiting worker threads (PyTorch's OpenMP pool, OpenVINO's) have gone to
  sleep and do not compete for the cores. Calls interleaved one by one across runtimes measured a
  320-px OpenVINO INT8 model at about twice its time alone on 2 cores.

Warm-up calls are run and thrown away: the first calls pay for lazy allocation and kernel selection,
which a deployed model pays once.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

DEFAULT_WARMUP = 3


@dataclass
class Timing:
    """Summary of one candidate's timed calls (milliseconds per call)."""

    median_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def from_times(cls, times_ms: list[float]) -> Timing:
        ordered = sorted(times_ms)
        return cls(median_ms=statistics.median(ordered), p90_ms=percentile(ordered, 90), runs=len(ordered))


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile of sorted values, linear between neighbours (numpy's default)."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _no_autograd() -> contextlib.AbstractContextManager:
    """PyTorch's inference mode where PyTorch is loaded (a timed PyTorch call then builds no graph), nothing
    where it is not (the runtime install times exported models only)."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def interleaved_times(calls: Mapping[str, Callable[[], object]], runs: int, warmup: int = DEFAULT_WARMUP,
                      progress: bool = False, keep_going: bool = True
                      ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Milliseconds of each timed call of each candidate, rounds interleaved across them.

    A candidate whose call raises is dropped from later rounds and its error returned
    in the second dict, so one broken runtime does not stop the others being timed
    (`keep_going=False` re-raises instead).
    """
    active = dict(calls)
    times: dict[str, list[float]] = {name: [] for name in calls}
    errors: dict[str, str] = {}
    rounds = tqdm(range(warmup + runs), desc="timing", unit="round", leave=False, disable=not progress)
    with _no_autograd():
        for i in rounds:
            for name, call in list(active.items()):
                start = time.perf_counter()
                try:
                    call()
                except Exception as exc:  # noqa: BLE001 - any runtime failure is reported for that row only
                    if not keep_going:
                        raise
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    del active[name]
                    continue
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
    return {name: values for name, values in times.items() if name not in errors}, errors


DEFAULT_ROUNDS = 3
SWITCH_PAUSE_S = 0.2  # longer than OpenMP's and TBB's spin-wait before a worker thread sleeps


def blocked_times(calls: Mapping[str, Callable[[], object]], runs: int, warmup: int = DEFAULT_WARMUP,
                  group_of: Callable[[str], str] = lambda key: key, rounds: int = DEFAULT_ROUNDS,
                  pause_s: float = SWITCH_PAUSE_S, progress: bool = False,
                  ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Milliseconds of `runs` timed calls of each candidate, run in blocks: per round, group after
    group (`group_of(key)`: a format's calls together), each call `warmup` times untimed and then its
    share of `runs` timed, consecutively; the group order is reversed every other round and `pause_s`
    seconds pass before each group. A candidate whose call raises is dropped, its error returned."""
    rounds = max(1, min(rounds, runs))
    shares = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    groups: dict[str, list[str]] = {}
    for key in calls:
        groups.setdefault(group_of(key), []).append(key)
    times: dict[str, list[float]] = {key: [] for key in calls}
    errors: dict[str, str] = {}
    bar = tqdm(total=rounds * len(calls), desc="timing", unit="block", leave=False, disable=not progress)
    with _no_autograd():
        for r, share in enumerate(shares):
            order = list(groups.values()) if r % 2 == 0 else list(groups.values())[::-1]
            for keys in order:
                time.sleep(pause_s)
                for key in keys:
                    bar.update(1)
                    if key in errors:
                        continue
                    try:
                        for i in range(warmup + share):
                            start = time.perf_counter()
                            calls[key]()
                            if i >= warmup:
                                times[key].append((time.perf_counter() - start) * 1000)
                    except Exception as exc:  # noqa: BLE001 - any runtime failure is reported for that row only
                        errors[key] = f"{type(exc).__name__}: {exc}"
    bar.close()
    return {key: values for key, values in times.items() if key not in errors}, errors


def latencies(weights: Mapping[str, Path], imgsz: int, runs: int, warmup: int = DEFAULT_WARMUP) -> dict[str, float]:
    """Median ms per image of PyTorch models (batch 1, fused FP32), interleaved run by run."""
    import torch

    from mhyolo.model.weights import load_model

    models = {name: load_model(path).fuse() for name, path in weights.items()}
    x = torch.rand(1, 3, imgsz, imgsz)
    calls = {name: (lambda m=model: m.predict(x)) for name, model in models.items()}
    times, _ = interleaved_times(calls, runs, warmup, keep_going=False)
    return {name: statistics.median(values) for name, values in times.items()}
