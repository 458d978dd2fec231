"""`mhyolo export`: write an ONNX file (or OpenVINO IR) and prove it matches PyTorch.

After writing, the model is run in its runtime (ONNX Runtime, or OpenVINO in FP32)
on real images and compared with PyTorch output by output and detection by
detection; a disagreement is an error (exit code 2), never a warning. A simplified
(onnxslim) graph that fails the check is replaced by the plain export, checked again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhyolo.defaults import DEFAULT_IMGSZ
from mhyolo.deploy.export import EXPORT_FORMATS as FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export weights to ONNX or OpenVINO and validate the result",
        description="Export a model to ONNX (one self-contained file) or OpenVINO IR, then check it "
                    "against PyTorch on real images (max abs difference per output, same detections).")
    parser.add_argument("--weights", required=True,
                        help="official .pt or mhyolo .safetensors; or an exported .onnx, converted to OpenVINO "
                             "(--format openvino) and checked against ONNX Runtime")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="target format (default: onnx)")
    parser.add_argument("--out", type=Path,
                        help="output .onnx file, or for openvino a .xml file or a folder for model.xml "
                             "(default: runs/export/<weights name>.onnx or runs/export/<name>_openvino/)")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="square input size baked into the graph (default: the size the model was trained "
                             f"at, else {DEFAULT_IMGSZ})")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    parser.add_argument("--dynamic-batch", action="store_true", help="allow any batch size (default: batch 1)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--images", nargs="+", type=Path,
                        help="images to validate with (default: the sample images of the shared folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():  # a context, not a global switch: callers in the same process keep autograd
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mhyolo.deploy.check import default_images, read_images
    from mhyolo.deploy.export import default_target, export_checked
    from mhyolo.runtime.load import input_size
    from mhyolo.model.weights import load_model

    if Path(str(args.weights)).suffix.lower() == ".onnx":
        return _from_onnx(args)
    model = load_model(args.weights)
    imgsz = input_size(model, args.imgsz)
    images = read_images(args.images or default_images())
    target = default_target(Path(str(args.weights)).stem, args.format, args.out)
    done = export_checked(model, target, args.format, imgsz, images, opset=args.opset,
                          dynamic_batch=args.dynamic_batch, simplify=not args.no_simplify)
    print(f"{done.runtime} vs PyTorch on {len(images)} image(s) at {imgsz}:")
    print(done.check.table())
    slim = "simplified with onnxslim" if done.simplified else "not simplified"
    print(f"exported {done.path} ({done.size_mb:.1f} MB, {slim}); outputs match PyTorch", file=sys.stderr)
    return 0


def _from_onnx(args: argparse.Namespace) -> int:
    """An exported ONNX file: only the conversion to OpenVINO IR is left to do; its size and graph are fixed."""
    from mhyolo.deploy.check import default_images, read_images
    from mhyolo.deploy.export import convert_onnx_checked, default_target
    from mhyolo.deploy.formats import file_format
    from mhyolo.errors import ConfigError

    source = Path(str(args.weights))
    if file_format(args.format).convert is None:
        raise ConfigError(f"{source}: already ONNX; from an .onnx file `mhyolo export` converts to --format openvino")
    if args.imgsz is not None:
        raise ConfigError(f"{source}: --imgsz {args.imgsz}: an ONNX file's input size is fixed at export; "
                          "export again from the .safetensors/.pt weights for another size")
    images = read_images(args.images or default_images())
    target = default_target(source.stem, args.format, args.out)
    done = convert_onnx_checked(source, target, images, args.format)
    print(f"{done.runtime} vs ONNX Runtime on {len(images)} image(s) at {done.imgsz}:")
    print(done.check.table())
    print(f"converted {source} -> {done.path} ({done.size_mb:.1f} MB); outputs match ONNX Runtime", file=sys.stderr)
    return 0
