"""Proof that an exported model still is the PyTorch model: every output compared
on real letterboxed images, then the detections after the shared post-processing.

The reference is the *unfused* PyTorch model, so BatchNorm folding, the export
wrapper, the runtime and `reconstruct` are all covered by one comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mhyolo.deploy.graph import ExportGraph
from mhyolo.errors import DataError, MhyoloError
from mhyolo.infer.inference import Inference, Kept
from mhyolo.infer.postprocess import Detections
from mhyolo.infer.preprocess import letterbox, model_input, to_float_batch
from mhyolo.model.yolo import YoloModel
from mhyolo.paths import shared_dir

OUTPUT_ATOL = 1e-3  # probabilities in [0, 1]: FP32 runtimes agree to ~1e-5
BOX_TOL_PX = 1.0  # network-input pixels
SCORE_TOL = 1e-3
CHECK_CONF = 0.25
CHECK_IOU = 0.45


@dataclass
class OutputDiff:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float


@dataclass
class ExportCheck:
    """Result of comparing a runtime with PyTorch; `problems` empty means it passed."""

    diffs: list[OutputDiff]
    detections: list[int]  # reference detections per image
    problems: list[str] = field(default_factory=list)
    atol: float = OUTPUT_ATOL
    reference: str = "PyTorch"  # what the outputs were compared with

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        width = max([len("output")] + [len(d.name) for d in self.diffs])
        lines = [f"{'output':<{width}}  {'shape':<20}  max abs diff"]
        for d in self.diffs:
            flag = "" if d.max_abs_diff <= self.atol else "  > tolerance"
            lines.append(f"{d.name:<{width}}  {str(d.shape):<20}  {d.max_abs_diff:.3g}{flag}")
        lines.append(f"detections per image ({self.reference}): {self.detections}")
        return "\n".join(lines)


def default_images() -> list[Path]:
    """The sample images in the shared folder (bus.jpg, zidane.jpg)."""
    folder = shared_dir() / "images"
    paths = sorted(p for p in folder.glob("*.jpg")) if folder.is_dir() else []
    if not paths:
        raise DataError(f"no sample images in {folder}: pass images to check the export with")
    return paths


def read_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    images = []
    for path in paths:
        image = cv2.imread(str(path))
        if image is None:
            raise DataError(f"{path}: cannot read this image")
        images.append(image)
    return images


def compare_detections(ref: Detections, cand: Detections, ref_types: torch.Tensor | None,
                       cand_types: torch.Tensor | None, conf: float, label: str) -> list[str]:
    """Problems found pairing each reference box with a candidate of the same class.

    A box missing on one side is tolerated only when its score is within `SCORE_TOL`
    of the threshold (it may fall on either side of it with FP32 rounding)."""
    problems: list[str] = []
    used: set[int] = set()
    for i in range(len(ref)):
        best, best_dist = -1, float("inf")
        for j in range(len(cand)):
            if j in used or int(cand.classes[j]) != int(ref.classes[i]):
                continue
            dist = float(np.abs(cand.boxes[j] - ref.boxes[i]).max())
            if dist < best_dist:
                best, best_dist = j, dist
        if best < 0 or best_dist > BOX_TOL_PX:
            if float(ref.scores[i]) > conf + SCORE_TOL:
                problems.append(f"{label}: box {ref.boxes[i].tolist()} (score {float(ref.scores[i]):.3f}) "
                                f"has no match within {BOX_TOL_PX} px")
            continue
        used.add(best)
        score_diff = abs(float(cand.scores[best]) - float(ref.scores[i]))
        if score_diff > SCORE_TOL:
            problems.append(f"{label}: score {float(cand.scores[best]):.4f} vs {float(ref.scores[i]):.4f}")
        if ref_types is not None and (cand_types is None or int(cand_types[best]) != int(ref_types[i])):
            problems.append(f"{label}: box {i} type differs")
    for j in range(len(cand)):
        if j not in used and float(cand.scores[j]) > conf + SCORE_TOL:
            problems.append(f"{label}: extra box {cand.boxes[j].tolist()} (score {float(cand.scores[j]):.3f})")
    return problems


@torch.no_grad()
def check_backend(model: YoloModel, backend, images: Sequence[np.ndarray], atol: float = OUTPUT_ATOL,
                  conf: float = CHECK_CONF, iou: float = CHECK_IOU) -> ExportCheck:
    """Compare `backend` (an `ExportedBackend`) with `model` on BGR `images` at the backend's size."""
    model = model.cpu().float().eval()
    imgsz = backend.imgsz
    padded = [letterbox(image, imgsz)[0] for image in images]
    x = torch.from_numpy(to_float_batch(padded))
    reference = ExportGraph(model, imgsz, fuse=False).named_outputs(x)
    return _compare(reference, Inference(model, conf, iou).run(x), backend, padded, atol, conf, iou)


@torch.no_grad()
def check_against_runtime(reference_backend, backend, images: Sequence[np.ndarray], atol: float = OUTPUT_ATOL,
                          conf: float = CHECK_CONF, iou: float = CHECK_IOU) -> ExportCheck:
    """Compare `backend` with another exported model (`reference_backend`, e.g. the `.onnx` it was
    converted from) on BGR `images`: the same outputs and detections, where no PyTorch model exists."""
    padded = [letterbox(image, backend.imgsz)[0] for image in images]
    fed = model_input(reference_backend).from_letterbox(padded)
    reference = {name: torch.from_numpy(np.asarray(value, dtype=np.float32))
                 for name, value in reference_backend.run(fed).items()}
    check = _compare(reference, Inference(reference_backend, conf, iou).run(fed), backend, padded, atol, conf, iou)
    check.reference = type(reference_backend).__name__
    return check


def _compare(reference: dict[str, torch.Tensor], ref_kept: list[Kept], backend, padded: list[np.ndarray],
             atol: float, conf: float, iou: float) -> ExportCheck:
    """Every reference output and detection against what `backend` gives on the same letterboxes."""
    fed = model_input(backend).from_letterbox(padded)  # the float batch, or the uint8 letterbox
    outputs = backend.run(fed)
    diffs, problems = [], []
    for name, ref in reference.items():
        if name not in outputs:
            problems.append(f"output {name} is missing")
            continue
        got = torch.from_numpy(np.asarray(outputs[name], dtype=np.float32))
        if tuple(got.shape) != tuple(ref.shape):
            problems.append(f"output {name}: shape {tuple(got.shape)}, reference {tuple(ref.shape)}")
            continue
        diff = float((got - ref).abs().max()) if ref.numel() else 0.0
        if not np.isfinite(diff) or diff > atol:
            problems.append(f"output {name}: max abs diff {diff:.3g} > {atol:g}")
        diffs.append(OutputDiff(name, tuple(ref.shape), diff))
    cand_kept = Inference(backend, conf, iou).run(fed)
    for b, (ref, cand) in enumerate(zip(ref_kept, cand_kept)):
        problems += compare_detections(ref.det, cand.det, _type_ids(ref), _type_ids(cand), conf, f"image {b}")
    return ExportCheck(diffs=diffs, detections=[len(k) for k in ref_kept], problems=problems, atol=atol)


def _type_ids(kept: Kept) -> torch.Tensor | None:
    return torch.from_numpy(kept.types.ids) if kept.types is not None else None


def validate_export(model: YoloModel, backend, images: Sequence[np.ndarray], atol: float = OUTPUT_ATOL) -> ExportCheck:
    """`check_backend`, raising `MhyoloError` (with the table) when the runtime disagrees."""
    result = check_backend(model, backend, images, atol=atol)
    if not result.ok:
        shown = "; ".join(result.problems[:5])
        more = f" (+{len(result.problems) - 5} more)" if len(result.problems) > 5 else ""
        raise MhyoloError(f"{backend.path}: {type(backend).__name__} disagrees with PyTorch: {shown}{more}\n"
                          f"{result.table()}")
    return result
