"""RKNN (Rockchip NPU) INT8 conversion and simulated inference, from the main environment.

rknn-toolkit2 cannot live in the main environment (it pins numpy <= 1.26.4, onnx <= 1.18,
protobuf 4.x), so it gets its own (`make rknn-env` -> `.venv-rknn`) and this module drives
`rknn_worker.py` there as a long-lived subprocess: npz in, npz out over pipes.

Two facts shape the design:

* **Input is raw pixels.** The converted model takes NHWC uint8 RGB and divides by 255
  itself (config mean 0, std 255). The predictor hands backends float [0, 1] NCHW, so
  `to_worker_input` turns that back into the original bytes; passing the floats on would
  normalise twice.
* **The x86 simulator cannot run a `.rknn` file**: `load_rknn` + `init_runtime()` needs a
  board. It runs only a model built in the same session, so `convert_rknn` writes a
  sidecar (`model.rknn.json`: mhyolo metadata, the ONNX path and hash, the calibration
  images, the toolkit settings, the `.rknn` hash) and `RknnSimulatorBackend` rebuilds from
  the ONNX with the very same calibration arrays. The rebuild is checked against the
  sidecar (calibration hash, and the simulated outputs on a probe image: the exported
  bytes are not reproducible), so the simulator scores the model that was shipped. A `.rknn` therefore needs its ONNX file
  (and the calibration images) where the sidecar says.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhyolo.deploy.calibration import calibration_files, letterboxed_rgb
from mhyolo.deploy.rknn_env import ENV_VARIABLE, RknnWorker, find_rknn_python, to_worker_input  # noqa: F401
from mhyolo.errors import ConfigError, MhyoloError, WeightsError
from mhyolo.infer.backends.base import ExportedBackend
from mhyolo.infer.layout import ExportMetadata
from mhyolo.infer.onnx_metadata import read_onnx_metadata

SIDECAR_SUFFIX = ".json"  # model.rknn -> model.rknn.json
SIDECAR_VERSION = 1


@dataclass
class RknnSettings:
    """What `rknn.config` is given; defaults are seed 000's (RK3588, per-channel asymmetric INT8)."""

    target: str = "rk3588"
    quantized_dtype: str = "asymmetric_quantized-8"
    quantized_algorithm: str = "normal"
    quantized_method: str = "channel"
    optimization_level: int = 3
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [255.0, 255.0, 255.0])


# -- calibration and sidecar ---------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_calibration(files: Sequence[Path], imgsz: int, folder: Path) -> tuple[Path, str]:
    """One letterboxed uint8 RGB `.npy` per image plus the list file `rknn.build` reads;
    returns the list and one hash over all arrays (what makes two builds comparable).

    Toolkit 2.5.0 wants `.npy` calibration arrays in the ONNX input's layout, (1, 3, H, W)
    (it rejects NHWC ones), and as raw pixels: it applies mean/std to them as to images."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    lines = []
    for i, path in enumerate(tqdm(files, desc="calibration images", unit="img", leave=False)):
        if not Path(path).is_file():
            raise MhyoloError(f"calibration image {path} is missing: the RKNN model cannot be rebuilt "
                              f"identically for the simulator")
        image = letterboxed_rgb(Path(path), imgsz)
        digest.update(np.ascontiguousarray(image).tobytes())
        target = folder / f"calib_{i:04d}.npy"
        np.save(target, np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
        lines.append(str(target.resolve()))
    listing = folder / "dataset.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing, digest.hexdigest()


def probe_image(listing: Path) -> np.ndarray:
    """The first calibration image as the worker's (1, H, W, 3) uint8 input: the probe whose
    simulated outputs identify a build."""
    first = np.load(listing.read_text().splitlines()[0])
    return np.ascontiguousarray(first.transpose(0, 2, 3, 1))


def fingerprint(outputs: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Sum, absolute sum and maximum of each output: enough to tell two quantizations apart."""
    return {name: [float(v.sum(dtype=np.float64)), float(np.abs(v).sum(dtype=np.float64)), float(v.max())]
            for name, v in sorted(outputs.items())}


def same_fingerprint(a: dict[str, list[float]], b: dict[str, list[float]], rtol: float = 1e-4) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=rtol, atol=1e-6) for k in a)


def sidecar_path(rknn_path: str | Path) -> Path:
    """`model.rknn` -> `model.rknn.json`."""
    path = Path(rknn_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def accuracy_dir(rknn_path: str | Path) -> Path:
    """Where `convert_rknn` keeps the per-layer accuracy analysis: `model.accuracy/`."""
    return Path(rknn_path).with_suffix(".accuracy")


def _output_names(onnx_path: Path) -> list[str]:
    """Graph outputs in the order the toolkit returns them."""
    import onnx

    return [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]


def _build_request(onnx_path: Path, listing: Path, meta: ExportMetadata, settings: RknnSettings,
                   output_names: list[str], **extra: Any) -> dict[str, Any]:
    return dict(asdict(settings), onnx=str(onnx_path.resolve()), dataset=str(listing), imgsz=int(meta.imgsz),
                input_name=meta.input_name, dynamic_batch=bool(meta.dynamic_batch), output_names=output_names,
                **extra)


def worst_layers(analysis_dir: Path, count: int = 5) -> list[tuple[str, float]]:
    """(layer, cosine similarity of simulated INT8 vs float) from the toolkit's
    `error_analysis.txt`, lowest first: where quantization hurts most."""
    report = analysis_dir / "error_analysis.txt"
    if not report.is_file():
        return []
    rows = []
    for line in report.read_text(errors="replace").splitlines():
        match = re.match(r"^\s*\[([^\]]+)\]\s+(\S+)\s+(-?\d+(?:\.\d+)?)", line)
        if match:
            rows.append((f"{match.group(2)} [{match.group(1)}]", float(match.group(3))))
    return sorted(rows, key=lambda row: row[1])[:count]


def convert_rknn(onnx_path: str | Path, out_path: str | Path, data_yaml: str | Path, calib_images: int = 50,
                 seed: int = 0, target: str = "rk3588", settings: RknnSettings | None = None,
                 analysis: bool = True, keep_layer_tensors: bool = False) -> Path:
    """Quantize an exported `.onnx` to an INT8 `.rknn` for `target`, calibrated on
    `calib_images` train images of `data_yaml`; writes the sidecar JSON (what the simulator
    needs to rebuild it) and, with `analysis`, the toolkit's per-layer accuracy report
    under `model.accuracy/` (`error_analysis.txt`; the per-layer tensor dumps it compared
    are deleted unless `keep_layer_tensors`, being a hundred times the model's size)."""
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise WeightsError(f"ONNX file not found: {onnx_path}")
    if out_path.suffix.lower() != ".rknn":
        raise ConfigError(f"{out_path}: the RKNN output must end in .rknn")
    python = find_rknn_python()  # fail before any work when the environment is missing
    settings = settings or RknnSettings(target=target)
    meta = read_onnx_metadata(onnx_path)
    files = calibration_files(data_yaml, calib_images, seed)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mhyolo-rknn-calib-") as scratch:
        listing, calib_hash = write_calibration(files, meta.imgsz, Path(scratch))
        analysis_out = accuracy_dir(out_path)
        if analysis:
            shutil.rmtree(analysis_out, ignore_errors=True)
        extra: dict[str, Any] = {"export": str(out_path.resolve())}
        if analysis:
            extra.update(analysis_input=listing.read_text().splitlines()[0], analysis_dir=str(analysis_out.resolve()))
        with RknnWorker(python, log_path=out_path.with_name(out_path.name + ".log")) as worker:
            reply, _ = worker.request("build", **_build_request(onnx_path, listing, meta, settings,
                                                                _output_names(onnx_path), **extra))
            _, probe = worker.request("infer", {"images": probe_image(listing)})
    if analysis and not keep_layer_tensors:  # per-layer tensor dumps: ~250 MB for yolov5n at 320
        for name in ("golden", "simulator"):
            shutil.rmtree(analysis_out / name, ignore_errors=True)
    sidecar = {
        "sidecar_version": SIDECAR_VERSION,
        "mhyolo": json.loads(meta.to_json()),
        "onnx": {"path": str(onnx_path.resolve()), "sha256": _sha256_file(onnx_path),
                 "relative": os.path.relpath(onnx_path.resolve(), out_path.parent.resolve())},
        "calibration": {"data": str(Path(data_yaml).resolve()), "split": "train", "seed": seed,
                        "imgsz": int(meta.imgsz), "files": [str(Path(f).resolve()) for f in files],
                        "sha256": calib_hash},
        "rknn": asdict(settings),
        # The exported bytes differ between identical builds (uninitialised padding in the
        # toolkit's writer), so a rebuild is recognised by its simulated outputs on a probe.
        "probe_fingerprint": fingerprint(probe),
        "rknn_sha256": reply["rknn_sha256"],
        "rknn_bytes": reply["rknn_bytes"],
        "convert_seconds": round(time.perf_counter() - started, 1),
        "input": "uint8 RGB NHWC (1, imgsz, imgsz, 3), letterboxed with grey 114; the model divides by 255",
    }
    sidecar_path(out_path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return out_path


# -- the simulator as an InferenceBackend -----------------------------------------------------------

def read_sidecar(rknn_path: str | Path) -> dict[str, Any]:
    """The conversion record beside a `.rknn`; the simulator cannot run the file without it."""
    path = sidecar_path(rknn_path)
    if not path.is_file():
        raise WeightsError(f"{rknn_path}: no {path.name} beside it; the RKNN simulator cannot run a .rknn file "
                           f"on x86 and rebuilds it from the ONNX and calibration that sidecar records: "
                           f"convert with mhyolo.deploy.rknn.convert_rknn")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: not valid JSON: {exc}") from exc
    if data.get("sidecar_version") != SIDECAR_VERSION:
        raise WeightsError(f"{path}: sidecar version {data.get('sidecar_version')!r}, this mhyolo reads "
                           f"{SIDECAR_VERSION}")
    return data


def sidecar_metadata(rknn_path: str | Path, record: dict[str, Any] | None = None) -> ExportMetadata:
    """The export metadata (names, anchors, strides, input size) recorded in a `.rknn`'s sidecar
    (`record`: the sidecar already read)."""
    record = record if record is not None else read_sidecar(rknn_path)
    return ExportMetadata.from_json(json.dumps(record["mhyolo"]), str(sidecar_path(rknn_path)))


def _recorded_onnx(rknn_path: Path, entry: dict[str, Any]) -> Path:
    """The ONNX a `.rknn` was built from: beside it as it was (a moved folder), else where it was."""
    relative = rknn_path.parent / entry.get("relative", "")
    return relative if entry.get("relative") and relative.is_file() else Path(entry["path"])


class RknnSimulatorBackend(ExportedBackend):
    """Runs a model through rknn-toolkit2's x86 simulator (an `InferenceBackend`).

    Given a `.rknn`, its sidecar names the ONNX and calibration images: the worker rebuilds
    from them once (~10-20 s for yolov5n at 320) and the rebuild is checked against the
    sidecar (`rebuild_matches`).
    Given an `.onnx`, `data_yaml` is required and the model is quantized on the fly. One
    worker process lives as long as the backend (closed by `close()` or at exit); each
    `predict` sends the batch over a pipe as uint8 NHWC.
    """

    def __init__(self, path: str | Path, data_yaml: str | Path | None = None, calib_images: int = 50,
                 seed: int = 0, settings: RknnSettings | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"model file not found: {path}")
        expected = None
        if path.suffix.lower() == ".rknn":
            record = read_sidecar(path)
            meta = sidecar_metadata(path, record)
            onnx_path = _recorded_onnx(path, record["onnx"])
            if not onnx_path.is_file():
                raise WeightsError(f"{sidecar_path(path)}: the ONNX file it was built from, {onnx_path}, is missing; "
                                   f"the simulator needs it to rebuild the model")
            if _sha256_file(onnx_path) != record["onnx"]["sha256"]:
                raise WeightsError(f"{onnx_path} changed since {path} was built from it (sha256 differs)")
            calib = record["calibration"]
            files, imgsz, calib_sha = [Path(f) for f in calib["files"]], int(calib["imgsz"]), calib["sha256"]
            settings = RknnSettings(**record["rknn"])
            expected = record.get("probe_fingerprint")
        elif path.suffix.lower() == ".onnx":
            if data_yaml is None:
                raise ConfigError(f"{path}: simulating an .onnx as RKNN INT8 needs data_yaml for calibration")
            meta, onnx_path = read_onnx_metadata(path), path
            files, imgsz, calib_sha = calibration_files(data_yaml, calib_images, seed), meta.imgsz, None
            settings = settings or RknnSettings()
        else:
            raise ConfigError(f"{path}: the RKNN simulator takes a .rknn (with its sidecar) or an .onnx")
        python = find_rknn_python()  # after the file's own checks: a bad file is named even without the toolkit
        super().__init__(path, meta)
        self._scratch = tempfile.mkdtemp(prefix="mhyolo-rknn-sim-")
        self.worker: RknnWorker | None = None
        try:
            listing, got_sha = write_calibration(files, imgsz, Path(self._scratch) / "calib")
            if calib_sha is not None and got_sha != calib_sha:
                raise WeightsError(f"{path}: the calibration images differ from those it was built with "
                                   f"(sha256 of the letterboxed arrays); the simulated model would not be the same")
            self.worker = RknnWorker(python, log_path=Path(self._scratch) / "worker.log")
            self.worker.request("build", **_build_request(onnx_path, listing, meta, settings,
                                                          _output_names(onnx_path)))
            _, probe = self.worker.request("infer", {"images": probe_image(listing)})
            self.rebuild_matches: bool | None = None if expected is None else same_fingerprint(
                fingerprint(probe), expected)
            if self.rebuild_matches is False:
                warnings.warn(f"{path}: the simulator's rebuild gives other outputs on the probe image than the "
                              f"converted model did (same ONNX, calibration and settings): scores are of the "
                              f"rebuild", stacklevel=2)
        except BaseException:
            self.close()
            raise

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.worker is None:
            raise MhyoloError(f"{self.path}: the RKNN simulator was closed")
        _, outputs = self.worker.request("infer", {"images": to_worker_input(batch)})
        return outputs

    def close(self) -> None:
        """Stop the worker and remove its scratch files."""
        if getattr(self, "worker", None) is not None:
            self.worker.close()
            self.worker = None
        if getattr(self, "_scratch", None):
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __del__(self) -> None:
        self.close()


# -- command line (until `mhyolo export` grows an RKNN format) -------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mhyolo.deploy.rknn MODEL.onnx --data data.yaml --out MODEL.rknn`."""
    parser = argparse.ArgumentParser(prog="python -m mhyolo.deploy.rknn", description=main.__doc__)
    parser.add_argument("onnx", help="an .onnx from `mhyolo export`")
    parser.add_argument("--data", required=True, help="data.yaml whose train split calibrates")
    parser.add_argument("--out", required=True, help="the .rknn to write (plus .rknn.json, .accuracy/)")
    parser.add_argument("--calib-images", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="rk3588")
    args = parser.parse_args(argv)
    try:
        out = convert_rknn(args.onnx, args.out, args.data, args.calib_images, args.seed, args.target)
    except MhyoloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    record = read_sidecar(out)
    print(f"wrote {out} ({record['rknn_bytes'] / 1e6:.2f} MB) in {record['convert_seconds']} s; sidecar "
          f"{sidecar_path(out).name}")
    for layer, cosine in worst_layers(accuracy_dir(out)):
        print(f"  cosine {cosine:.5f}  {layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
