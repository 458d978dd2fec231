"""`mhyolo export`: write an ONNX file (or OpenVINO IR) and prove it matches PyTorch.

After writing, the model is run in its runtime (ONNX Runtime, or OpenVINO in FP32)
on real images and compared with PyTorch output by output and detection by
detection; a disagreement is an error (exit code 2), never a warning. A simplified
(onnxslim) graph that fails the check is replaced by the plain export, checked again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

FORMATS = ("onnx", "openvino")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export weights to ONNX or OpenVINO and validate the result",
        description="Export a model to ONNX (one self-contained file) or OpenVINO IR, then check it "
                    "against PyTorch on real images (max abs difference per output, same detections).")
    parser.add_argument("--weights", required=True, help="official .pt or mhyolo .safetensors")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="target format (default: onnx)")
    parser.add_argument("--out", type=Path,
                        help="output .onnx file, or for openvino a .xml file or a folder for model.xml "
                             "(default: runs/export/<weights name>.onnx or runs/export/<name>_openvino/)")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="square input size baked into the graph (default: the size the model was trained "
                             "at, else 640)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    parser.add_argument("--dynamic-batch", action="store_true", help="allow any batch size (default: batch 1)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--images", nargs="+", type=Path,
                        help="images to validate with (default: the sample images of the shared folder)")
    parser.set_defaults(func=run)


def _targets(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(onnx path, xml path or None)."""
    stem = Path(str(args.weights)).stem
    if args.format == "onnx":
        return (args.out or Path("runs/export") / f"{stem}.onnx"), None
    out = args.out or Path("runs/export") / f"{stem}_openvino"
    xml = out if out.suffix == ".xml" else out / "model.xml"
    return xml.with_suffix(".onnx"), xml


def _check(model, path: Path, images, fmt: str):
    from mhyolo.deploy.check import check_backend

    if fmt == "onnx":
        from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(path)
    else:
        from mhyolo.infer.backends.openvino_backend import OpenVinoBackend

        backend = OpenVinoBackend(path, precision="f32")
    return backend, check_backend(model, backend, images)


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():  # a context, not a global switch: callers in the same process keep autograd
        return _run(args)


def _run(args: argparse.Namespace) -> int:

    from mhyolo.deploy.check import default_images, read_images
    from mhyolo.deploy.onnx_export import export_onnx, export_openvino
    from mhyolo.errors import MhyoloError
    from mhyolo.infer.backends import input_size
    from mhyolo.model.weights import load_model

    model = load_model(args.weights)
    args.imgsz = input_size(model, args.imgsz)
    images = read_images(args.images or default_images())
    onnx_path, xml_path = _targets(args)
    with tempfile.TemporaryDirectory() as tmp:
        if xml_path is not None:
            onnx_path = Path(tmp) / "model.onnx"  # intermediate only
        result = export_onnx(model, onnx_path, imgsz=args.imgsz, opset=args.opset,
                             dynamic_batch=args.dynamic_batch, simplify=not args.no_simplify)
        final = onnx_path if xml_path is None else export_openvino(onnx_path, xml_path)
        backend, check = _check(model, final, images, args.format)
        if not check.ok and result.simplified:
            print("the simplified graph failed the check; exporting without onnxslim", file=sys.stderr)
            result = export_onnx(model, onnx_path, imgsz=args.imgsz, opset=args.opset,
                                 dynamic_batch=args.dynamic_batch, simplify=False)
            final = onnx_path if xml_path is None else export_openvino(onnx_path, xml_path)
            backend, check = _check(model, final, images, args.format)
    runtime = type(backend).__name__
    print(f"{runtime} vs PyTorch on {len(images)} image(s) at {args.imgsz}:")
    print(check.table())
    if not check.ok:
        raise MhyoloError(f"{final}: {runtime} disagrees with PyTorch: {'; '.join(check.problems[:5])}")
    size_mb = sum(p.stat().st_size for p in (final, final.with_suffix(".bin")) if p.is_file()) / 1e6
    slim = "simplified with onnxslim" if result.simplified else "not simplified"
    print(f"exported {final} ({size_mb:.1f} MB, {slim}); outputs match PyTorch", file=sys.stderr)
    return 0
