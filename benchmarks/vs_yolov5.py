"""End to end against YOLOv5's own `detect.py`: whole processes on a folder, per runtime.

    python benchmarks/vs_yolov5.py --yolov5 ../yolov5 --yolov5-python ../y5env/bin/python \\
        --images IMAGES --pair pytorch yolov5n.pt yolov5n.pt \\
        --pair onnx mh/yolov5n.onnx yolov5n.onnx \\
        --pair openvino mh/ov/model.xml yolov5n_openvino_model \\
        --pair "openvino int8" mh/ov_int8/model.xml yolov5n_int8_openvino_model

What a user waits for: each tool runs as its own process on the first 40 and the first 240 images of
IMAGES (copied into two folders), and the steady state per image is (time for 240 - time for 40) / 200,
so start-up (imports, model load, compilation) cancels out. Rounds alternate the tools and the runtimes
call by call, and each figure is the median of the rounds, so a drift of the machine hits both tools.
Each `--pair` names a runtime, mhyolo's model file (options may follow it: `"model.xml --ov-precision bf16"`)
and YOLOv5's (each tool reads its own export of the same weights). Two output modes: `images` (each tool's default: annotated copies written) and `json`
(results only: `mhyolo predict --json --no-images` against `detect.py --nosave --save-txt --save-conf`).
The table gives ms per image and YOLOv5 / mhyolo (above 1: mhyolo is faster); the CPU is named.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mhyolo.machine import cpu_info  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
COUNTS = (40, 240)
MODES = ("images", "json")


def subsets(images: Path, root: Path) -> dict[int, Path]:
    """The first 40 and first 240 images (by name) as real copies, so neither tool reads through links."""
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < max(COUNTS):
        raise SystemExit(f"{images}: {len(files)} images, {max(COUNTS)} needed")
    folders = {}
    for count in COUNTS:
        folder = root / f"images{count}"
        folder.mkdir()
        for file in files[:count]:
            shutil.copy(file, folder / file.name)
        folders[count] = folder
    return folders


def mhyolo_command(weights: str, source: Path, out: Path, mode: str, imgsz: int) -> list[str]:
    """`weights` may carry options after the file (e.g. `model.xml --ov-precision bf16`)."""
    file, *options = shlex.split(weights)
    command = [sys.executable, "-m", "mhyolo.cli", "predict", str(source), "--weights", str(Path(file).resolve()),
               "--imgsz", str(imgsz), "--conf", "0.25", "--iou", "0.45", "--out", str(out), *options]
    return command + (["--json", "--no-images"] if mode == "json" else [])


def yolov5_command(python: str, repo: Path, weights: str, source: Path, out: Path, mode: str,
                   imgsz: int) -> list[str]:
    command = [python, str(repo / "detect.py"), "--weights", weights, "--source", str(source),
               "--imgsz", str(imgsz), "--device", "cpu", "--conf-thres", "0.25", "--iou-thres", "0.45",
               "--project", str(out), "--name", "run", "--exist-ok"]
    return command + (["--nosave", "--save-txt", "--save-conf"] if mode == "json" else [])


def timed(command: list[str], cwd: Path | None = None) -> float:
    """Wall seconds of one whole process; its output is kept only when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yolov5", type=Path, required=True, help="a checkout of the YOLOv5 repository")
    parser.add_argument("--yolov5-python", required=True, help="the Python that runs its detect.py")
    parser.add_argument("--images", type=Path, required=True, help=f"a folder of at least {max(COUNTS)} images")
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("RUNTIME", "MHYOLO", "YOLOV5"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()

    for _, mh_weights, y5_weights in args.pair:
        for file in (shlex.split(mh_weights)[0], y5_weights):
            if not Path(file).exists():  # YOLOv5 would try to download a missing file
                raise SystemExit(f"{file}: no such file or folder")
    work = Path(tempfile.mkdtemp(prefix="vs_yolov5_"))
    folders = subsets(args.images, work)
    seconds: dict[tuple[str, str, str, int], list[float]] = {}
    runs = [(runtime, mode, tool) for runtime, _, _ in args.pair for mode in args.modes for tool in ("mhyolo", "yolov5")]
    total = args.rounds * len(runs) * len(COUNTS)
    done = 0
    for round_index in range(args.rounds):
        order = runs if round_index % 2 == 0 else [(r, m, t) for r, m, t in reversed(runs)]
        for runtime, mode, tool in order:
            mh_weights, y5_weights = next((m, y) for r, m, y in args.pair if r == runtime)
            y5_weights = str(Path(y5_weights).resolve())
            for count in COUNTS:
                out = work / f"out_{tool}"
                if tool == "mhyolo":
                    command = mhyolo_command(mh_weights, folders[count], out, mode, args.imgsz)
                    seconds.setdefault((runtime, mode, tool, count), []).append(timed(command))
                else:
                    command = yolov5_command(args.yolov5_python, args.yolov5, y5_weights, folders[count], out,
                                             mode, args.imgsz)
                    seconds.setdefault((runtime, mode, tool, count), []).append(timed(command, args.yolov5))
                shutil.rmtree(out, ignore_errors=True)
                done += 1
                print(f"\r{done}/{total} processes", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)

    span = max(COUNTS) - min(COUNTS)
    print(f"CPU: {cpu_info().describe()}; {args.imgsz}-px input, {args.rounds} alternated rounds, "
          f"ms per image = (t{max(COUNTS)} - t{min(COUNTS)}) / {span}, median of the rounds (min-max)")
    print("| runtime | output | YOLOv5 detect.py ms | mhyolo ms | YOLOv5 / mhyolo | start-up s (YOLOv5 / mhyolo) |")
    print("|---|---|---|---|---|---|")
    for runtime, _, _ in args.pair:
        for mode in args.modes:
            per_image = {}
            startup = {}
            for tool in ("yolov5", "mhyolo"):
                small = seconds[(runtime, mode, tool, min(COUNTS))]
                large = seconds[(runtime, mode, tool, max(COUNTS))]
                per_image[tool] = [(b - a) / span * 1000 for a, b in zip(small, large)]
                startup[tool] = statistics.median(a - (b - a) / span * min(COUNTS) for a, b in zip(small, large))
            ratios = [y / m for y, m in zip(per_image["yolov5"], per_image["mhyolo"])]
            cells = [f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in
                     (per_image["yolov5"], per_image["mhyolo"])]
            print(f"| {runtime} | {mode} | {cells[0]} | {cells[1]} | x{statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) | {startup['yolov5']:.1f} / {startup['mhyolo']:.1f} |")


if __name__ == "__main__":
    main()
