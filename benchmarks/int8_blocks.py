"""Which block of a model costs accuracy in ONNX Runtime INT8: quantize it again with one block
at a time kept in float, score each on the validation split, and print the change against the
all-INT8 model and against FP32, beside each block's activation SQNR.

    .venv/bin/python benchmarks/int8_blocks.py --onnx runs/demo/benchmark/model.onnx \\
        --data runs/demo/data/data.yaml [--blocks /layers.1/ /layers.2/cv2/] [--top 8] [--split val]

Without --blocks, the --top blocks with the lowest SQNR are tried (the ones
`mhyolo quantize --min-sqnr` would pick first). A block that helps here can then be kept float
with `mhyolo quantize --backend ort --float-blocks BLOCK`. Differences of a few thousandths are
within the noise of a 150-image validation set: check a finding on the train split too
(`--split train`), as the README's INT8 figures were.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

from mhyolo.commands.quantize import score
from mhyolo.deploy.calibration import calibration_batches
from mhyolo.infer.onnx_metadata import read_onnx_metadata
from mhyolo.deploy.quantize_ort import quantize_onnx_static
from mhyolo.deploy.sensitivity import SENSITIVITY_IMAGES, block_noise
from mhyolo.runtime.load import load_backend

KEYS = ("map50", "map50_95", "typed_map50")


def quietly(fn, *args, **kwargs):
    """Run without the progress bars of quantization and validation."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, type=Path, help="exported FP32 .onnx")
    parser.add_argument("--data", required=True, type=Path, help="data.yaml: calibration from train, scores on --split")
    parser.add_argument("--blocks", nargs="+", default=None, help="blocks to try (default: the --top noisiest)")
    parser.add_argument("--top", type=int, default=8, help="how many of the noisiest blocks to try (default 8)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--calib-images", type=int, default=50)
    args = parser.parse_args()

    meta = read_onnx_metadata(args.onnx)
    calib = calibration_batches(args.data, meta.imgsz, count=args.calib_images, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = quietly(quantize_onnx_static, args.onnx, tmp / "all.onnx", calib, progress=False)
        noise = {b.block: b.sqnr_db for b in block_noise(args.onnx, base, meta.input_name, calib[:SENSITIVITY_IMAGES])}
        blocks = args.blocks or sorted(noise, key=noise.get)[:args.top]
        fp32 = quietly(score, load_backend(args.onnx), args.data, args.split)
        all_int8 = quietly(score, load_backend(base), args.data, args.split)
        keys = [k for k in KEYS if fp32.get(k) is not None]
        header = f"{'float block':<28} {'SQNR dB':>8} " + " ".join(f"{k:>22}" for k in keys)
        print(f"{args.split} split of {args.data}; cells: score (vs all-INT8 / vs FP32)")
        print(header)
        print(f"{'FP32':<28} {'':>8} " + " ".join(f"{fp32[k]:>22.4f}" for k in keys))
        print(f"{'none (all INT8)':<28} {'':>8} " +
              " ".join(f"{all_int8[k]:>8.4f} ({'':>5} / {all_int8[k] - fp32[k]:+.3f})" for k in keys))
        for block in blocks:
            path = quietly(quantize_onnx_static, args.onnx, tmp / "one.onnx", calib, progress=False,
                           float_blocks=[block])
            row = quietly(score, load_backend(path), args.data, args.split)
            sqnr = noise.get(block)
            cells = " ".join(f"{row[k]:>8.4f} ({row[k] - all_int8[k]:+.3f} / {row[k] - fp32[k]:+.3f})" for k in keys)
            print(f"{block:<28} {'' if sqnr is None else f'{sqnr:.1f}':>8} {cells}", flush=True)


if __name__ == "__main__":
    main()
