"""Where an OpenVINO IR's model call spends its time: per-node CPU time from the plugin's own
counters (PERF_COUNT), grouped by layer type and executed kernel, with each group's share.

    .venv/bin/python benchmarks/openvino_profile.py runs/int8/silu-640/best_openvino_int8/best.xml \\
        [--runs 50] [--threads 2] [--top 15] [--uint8]

`--uint8` profiles the same IR with the uint8 BGR NHWC input written into the graph
(`deploy.openvino_input.uint8_input`), so the two inputs can be compared on one model. The IR is
compiled as `mhyolo predict` compiles it (`OpenVinoBackend`, precision "auto"); the counters are
summed over `--runs` calls after 5 warm-up calls, and the table gives the mean per call.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from mhyolo.machine import cpu_info


def profile(xml: Path, runs: int, threads: int, uint8: bool) -> tuple[dict[tuple[str, str], list[float]], float]:
    """(layer type, kernel) -> [summed CPU µs, node count] per call, and the wall time per call in ms."""
    import time

    import openvino as ov

    from mhyolo.deploy.openvino_input import uint8_input
    from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

    backend = OpenVinoBackend(xml, precision="auto", threads=threads)
    model, meta = backend.model, backend.metadata
    if uint8 and meta.input_kind != "uint8_bgr_nhwc":
        model, meta = uint8_input(model, meta, str(xml))
    compiled = ov.Core().compile_model(model, "CPU", {**backend.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    size = meta.imgsz
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8) if meta.input_kind == "uint8_bgr_nhwc"
         else rng.random((1, 3, size, size), dtype=np.float32))
    for _ in range(5):
        request.infer({meta.input_name: x})
    groups: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    wall = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({meta.input_name: x})
        wall += time.perf_counter() - start
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            group = groups[(info.node_type, info.exec_type)]
            group[0] += info.cpu_time.total_seconds() * 1e6 / runs
            group[1] += 1 / runs
    return dict(groups), 1000 * wall / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xml", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--uint8", action="store_true", help="profile it with the uint8 input in the graph")
    args = parser.parse_args()
    groups, wall = profile(args.xml, args.runs, args.threads, args.uint8)
    total = sum(us for us, _ in groups.values())
    print(f"{args.xml} ({'uint8' if args.uint8 else 'as saved'} input); CPU: {cpu_info(args.threads).describe()}")
    print(f"{args.runs} calls: wall {wall:.2f} ms per call, node CPU time {total / 1000:.2f} ms per call\n")
    print("| layer type | kernel | nodes | ms per call | share |")
    print("|---|---|---|---|---|")
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])
    for (kind, kernel), (us, count) in ranked[:args.top]:
        print(f"| {kind} | {kernel} | {round(count)} | {us / 1000:.3f} | {100 * us / total:.1f} % |")
    rest = ranked[args.top:]
    if rest:
        us = sum(v[0] for _, v in rest)
        print(f"| ({len(rest)} more groups) | | {round(sum(v[1] for _, v in rest))} | {us / 1000:.3f} | "
              f"{100 * us / total:.1f} % |")


if __name__ == "__main__":
    main()
