"""Time an exported model where it is deployed, as `mhyolo benchmark` times a format: a `.rknn` on the
Rockchip board it was converted for, or an `.onnx` / OpenVINO `.xml` on any machine with the runtime
install (no PyTorch needed).

Run it on the board (README, *On a Rockchip board*), with the `.rknn`, its `.rknn.json` sidecar and a
few photos copied there:

    python benchmarks/board.py model.rknn photos/ --npu-cores auto 0 all
    python benchmarks/board.py model.onnx photos/ --threads 2 4

One row per NPU core setting (per thread count for other files), the benchmark's timing columns: the model call alone (one NPU
inference, batch 1), one photo end to end (letterbox, NPU, decoding, NMS, types), the share spent
outside the model call, and frames/s over the photos one after another (`predict` on a folder). The
settings are timed one after another in blocks (`bench.timing.blocked_times`). Off a board (no
`rknnlite`), the `.rknn` runs in rknn-toolkit2's x86 simulator, which says nothing of NPU speed: the
script then says so and times nothing unless `--simulator` asks for it (to try the script itself).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

CALL_KINDS = ("model", "e2e", "stream")


def read_photos(folder: Path, count: int) -> list:
    """Up to `count` readable images of `folder` (or the one image `folder` names), in name order."""
    from mhyolo.infer.sources import IMAGE_SUFFIXES, read_image

    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    photos = []
    for path in files[:count]:
        image, error = read_image(path)
        if image is None:
            raise SystemExit(f"{path}: {error}")
        photos.append(image)
    if not photos:
        raise SystemExit(f"{folder}: no images to time")
    return photos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a .rknn from `mhyolo quantize --backend rknn` (its .rknn.json beside "
                                                 "it), or an exported .onnx / OpenVINO .xml")
    parser.add_argument("photos", type=Path, help="a folder of photos (or one photo) to time end to end")
    parser.add_argument("--npu-cores", nargs="+", default=["auto"], metavar="CORES",
                        help="core settings to time, a row each: auto, 0, 1, 2, all (default: auto)")
    parser.add_argument("--frames", type=int, default=8, help="photos per frames/s measurement (default: 8)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls of each kind per setting (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each block (default: 3)")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold end to end (default: 0.25)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0], metavar="N",
                        help="an .onnx / .xml: CPU threads of each row (default: 0, the runtime's choice)")
    parser.add_argument("--simulator", action="store_true", help="off a board: time the x86 simulator anyway")
    args = parser.parse_args()
    rknn = args.model.suffix.lower() == ".rknn"

    from mhyolo.bench.timing import Timing, blocked_times
    from mhyolo.deploy.rknn_lite import RknnLiteBackend, on_board
    from mhyolo.infer.predictor import Predictor
    from mhyolo.infer.stream import StreamPredictor

    board = on_board()
    if rknn and not board and not args.simulator:
        print(f"{platform.machine()}: not a Rockchip board with rknn-toolkit-lite2; the x86 simulator's times say "
              "nothing of the NPU (--simulator times it anyway)", file=sys.stderr)
        return 2
    photos = read_photos(args.photos, args.frames)
    backends = {}
    if not rknn:
        from mhyolo.runtime.load import load_backend

        backends = {f"{n or 'default'} threads": load_backend(args.model, threads=n or None) for n in args.threads}
    for cores in args.npu_cores if rknn else ():
        if board:
            backends[cores] = RknnLiteBackend(args.model, npu_cores=cores)
        else:
            from mhyolo.deploy.rknn import RknnSimulatorBackend

            backends[cores] = RknnSimulatorBackend(args.model)
    calls = {}
    streams = []
    for cores, backend in backends.items():
        predictor = Predictor(backend, imgsz=backend.imgsz, conf=args.conf)
        x, _ = predictor.prepare(photos[:1])
        stream = StreamPredictor(predictor)
        streams.append(stream)
        calls[f"{cores}@model"] = lambda i=predictor.inference, x=x: i.call(x)
        calls[f"{cores}@e2e"] = lambda p=predictor: p.predict(photos[:1])
        calls[f"{cores}@stream"] = lambda s=stream: list(s.predict(enumerate(photos)))
    try:
        times, errors = blocked_times(calls, args.runs, args.warmup, group_of=lambda key: key.split("@")[0],
                                      progress=True)
    finally:
        for stream in streams:
            stream.close()
        for backend in backends.values():
            getattr(backend, "close", lambda: None)()
    if rknn:
        where = "NPU (rknn-toolkit-lite2)" if board else "x86 simulator: not NPU speed"
    else:
        from mhyolo.machine import cpu_info

        where = f"{type(next(iter(backends.values()))).__name__}, {cpu_info().describe()}"
    print(f"{args.model.name} on {platform.machine()}, {where}, input {next(iter(backends.values())).imgsz} px; "
          f"{args.runs} calls of each kind per setting in 3 rounds, settings one after another; medians and p90")
    print(f"\n| {'NPU cores' if rknn else 'setting'} | model ms | model p90 | end-to-end ms | e2e p90 | outside model | frames/s |")
    print("|---|---|---|---|---|---|---|")
    for cores in backends:
        if any(f"{cores}@{kind}" in errors for kind in CALL_KINDS):
            failed = next(errors[f"{cores}@{kind}"] for kind in CALL_KINDS if f"{cores}@{kind}" in errors)
            print(f"| {cores} | failed: {failed.splitlines()[0]} |  |  |  |  |  |")
            continue
        model, e2e, stream = (Timing.from_times(times[f"{cores}@{kind}"]) for kind in CALL_KINDS)
        outside = max(0.0, 1.0 - model.median_ms / e2e.median_ms)
        print(f"| {cores} | {model.median_ms:.1f} | {model.p90_ms:.1f} | {e2e.median_ms:.1f} | {e2e.p90_ms:.1f} | "
              f"{100 * outside:.0f}% | {len(photos) * 1000 / stream.median_ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
