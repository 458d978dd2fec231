"""How the data stage scales: `data build` and `data verify` on generated YOLO sets of 2,000 /
20,000 / 100,000 small images, time and peak memory per stage, plus the near-duplicate search
alone on random hashes.

    .venv/bin/python benchmarks/data_scale.py                       # 2,000 and 20,000 images
    .venv/bin/python benchmarks/data_scale.py --sizes 2000 20000 100000 --workers 2

Each set is written to a temporary folder and deleted afterwards (nothing is stored): 64x64 JPEG
pictures of random colour blocks, one or two boxes each, a tenth of them slightly changed copies
of another (near-duplicates, also across train/valid), in the Roboflow layout. Per size, four runs:
`data build` (scan, hash, dedup, select, write, report), the same build again (hashes from the hash cache),
and `data verify` of the result (scan, hash, dedup = the leak search), each in a fresh process.
"peak MB" is that process's peak resident memory within the stage; "B/image" is the peak above
the memory before the command, per image. Worker processes are reported under the table. Figures depend on the
machine and on what else runs on it; the CPU is named with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mhyolo.data.build import build_dataset
from mhyolo.data.dedup import near_pairs
from mhyolo.data.hashing import resolve_workers
from mhyolo.data.recipe import recipe_from_dict
from mhyolo.data.report import format_table
from mhyolo.data.stages import Stages
from mhyolo.data.verify import verify_dataset
from mhyolo.machine import cpu_info

SIDE = 64
CLASSES = ["a", "b", "c"]
DUPLICATE_SHARE = 0.1


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((SIDE, SIDE), Image.BILINEAR)


def _write_images(root: str, start: int, stop: int, n: int) -> None:
    """Images start..stop-1 of a set of n; image k is a near-copy of an earlier one for a tenth of k."""
    for k in range(start, stop):
        rng = np.random.default_rng(10_000_000 + k)
        split = "valid" if k % 10 == 0 else "train"
        if k > 10 and rng.random() < DUPLICATE_SHARE:
            pixels = np.asarray(_picture(int(rng.integers(0, k))), dtype=np.int16)
            pixels = pixels + rng.integers(-6, 7, pixels.shape)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        else:
            image = _picture(k)
        image.save(f"{root}/{split}/images/im{k:07d}.jpg", quality=90)
        boxes = [f"{rng.integers(0, len(CLASSES))} {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} "
                 f"{rng.uniform(0.05, 0.3):.4f} {rng.uniform(0.05, 0.3):.4f}" for _ in range(int(rng.integers(1, 3)))]
        Path(f"{root}/{split}/labels/im{k:07d}.txt").write_text("\n".join(boxes) + "\n")


def generate(root: Path, n: int, workers: int) -> None:
    """A Roboflow-style YOLO export of `n` images under `root`."""
    for split in ("train", "valid"):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train/images", "val": "valid/images",
                                                    "nc": len(CLASSES), "names": CLASSES}))
    step = 2000
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_images, [str(root)] * len(range(0, n, step)), range(0, n, step),
                      [min(s + step, n) for s in range(0, n, step)], [n] * len(range(0, n, step))))


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [d for c in children for d in _descendants(c)]


class MeasuredStages(Stages):
    """Stages with this process's peak memory per stage (the peak is reset as each stage starts,
    Linux /proc/self/clear_refs) and the largest worker process seen (sampled)."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_kb: dict[str, int] = {}
        self.worker_kb = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid in _descendants(os.getpid()):
                self.worker_kb = max(self.worker_kb, _status_kb(pid, "VmHWM"))

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()

    def started(self, name: str) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # no reset: the peak is the process's peak so far

    def finished(self, name: str) -> None:
        self.peak_kb[name] = max(self.peak_kb.get(name, 0), _status_kb("self", "VmHWM"))


def run_command(command: str, root: Path, workers: int) -> dict:
    """One command on the set under `root`, measured (runs in a fresh process, see `measure`)."""
    os.environ["MHYOLO_HOME"] = str(root / "home")  # a hash cache of its own, removed with the set
    recipe = recipe_from_dict({"classes": CLASSES, "scan": {"workers": workers},
                               "sources": [{"path": str(root / "src"), "name": "syn",
                                            "classes": {c: c for c in CLASSES}}]})
    stages = MeasuredStages()
    start_kb = _status_kb("self", "VmRSS")
    began = time.perf_counter()
    try:
        if command == "build":
            build_dataset(recipe, root / "out", progress=False, verify=False, stages=stages)
        elif command == "rebuild":
            build_dataset(recipe, root / "again", progress=False, verify=False, stages=stages)
        else:
            verify_dataset(root / "out" / "data.yaml", progress=False, workers=workers, stages=stages)
    finally:
        stages.close()
    return {"seconds": stages.seconds, "peak_kb": stages.peak_kb, "start_kb": start_kb,
            "worker_kb": stages.worker_kb, "total": time.perf_counter() - began}


def measure(command: str, label: str, n: int, root: Path, workers: int, rows: list[list[object]],
            notes: list[str]) -> None:
    """Run `command` in a fresh interpreter (so one command's memory does not count in the next)."""
    done = subprocess.run([sys.executable, __file__, "--run", command, "--root", str(root), "--workers", str(workers)],
                          check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for stage, seconds in result["seconds"].items():
        peak = result["peak_kb"][stage]
        rows.append([f"{n:,}", label, stage, f"{seconds:.1f}", f"{n / seconds:,.0f}" if seconds > 0 else "",
                     f"{peak / 1024:.0f}", f"{max(0, peak - result['start_kb']) * 1024 / n:.0f}"])
    rows.append([f"{n:,}", label, "total", f"{result['total']:.1f}", f"{n / result['total']:,.0f}", "", ""])
    notes.append(f"{n:,} {label}: {result['start_kb'] / 1024:.0f} MB before the command; largest worker process "
                 f"peak {result['worker_kb'] / 1024:.0f} MB")


def search_only(n: int, threshold: int = 6, bits: int = 64) -> float:
    hashes = np.random.default_rng(n).random((n, bits)) < 0.5
    began = time.perf_counter()
    near_pairs(hashes, threshold)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, default=None, help="processes for decoding (default: every core)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the generated sets (default: the system's)")
    parser.add_argument("--no-rebuild", action="store_true", help="skip the second, cached build")
    parser.add_argument("--run", choices=("build", "rebuild", "verify"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workers = resolve_workers(args.workers)
    if args.run:  # one measured command, in its own process
        print(json.dumps(run_command(args.run, args.root, workers)))
        return

    rows: list[list[object]] = []
    notes: list[str] = []
    headers = ["images", "command", "stage", "seconds", "images/s", "peak MB", "B/image"]
    for n in args.sizes:
        notes.append(f"{n:,}: near-duplicate search alone on {n:,} random 64-bit hashes, threshold 6: "
                     f"{search_only(n):.2f} s")
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            root = Path(tmp)
            generate(root / "src", n, workers)
            notes.append(f"{n:,}: set generated in {time.perf_counter() - began:.0f} s")
            measure("build", "build", n, root, workers, rows, notes)
            if not args.no_rebuild:
                measure("rebuild", "rebuild (cached hashes)", n, root, workers, rows, notes)
            measure("verify", "verify", n, root, workers, rows, notes)
            began = time.perf_counter()
        notes.append(f"{n:,}: set deleted in {time.perf_counter() - began:.0f} s")
        print(format_table(headers, [r for r in rows if r[0] == f"{n:,}"]), flush=True)  # each size as it ends
    if len(args.sizes) > 1:
        print()
        print(format_table(headers, rows))
    print()
    for line in notes:
        print(line)
    print(f"CPU: {cpu_info().describe()}; {workers} decoding worker(s); load average at the end "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
