"""Which kernels OpenVINO's CPU plugin actually runs for a compiled model.

An INT8 IR only pays when its convolutions run as INT8 kernels (`brgconv_avx512_1x1_I8`,
`jit_avx2_I8`, `brgconv_avx512_amx_I8`, ...): a FakeQuantize the plugin cannot fold, or a
precision hint that keeps a block in float, silently leaves them in f32/bf16. The executed graph
(`CompiledModel.get_runtime_model()`) names each node's kernel and runtime precision, so a
benchmark row and `mhyolo quantize` can show what ran instead of assuming it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

INT8_PRECISIONS = ("u8", "i8")


def _info(op: Any, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def is_int8_kernel(kernel: str, precision: str) -> bool:
    """An 8-bit kernel: OpenVINO names them `..._I8` and runs them at u8/i8 precision."""
    return kernel.endswith("_I8") or precision.lower() in INT8_PRECISIONS


@dataclass
class KernelSummary:
    """Convolution kernels of one compiled model: kernel name -> how many convolutions run it."""

    convolutions: Counter = field(default_factory=Counter)
    int8_convolutions: int = 0

    @property
    def total(self) -> int:
        return sum(self.convolutions.values())

    def describe(self) -> str:
        """'INT8 convs 63/66: brgconv_avx512_1x1_I8 x45, brgconv_avx512_I8 x18, brgconv_avx512_1x1_f32 x3'."""
        kernels = ", ".join(f"{name} x{count}" for name, count in self.convolutions.most_common())
        return f"INT8 convs {self.int8_convolutions}/{self.total}: {kernels}"

    def to_dict(self) -> dict[str, Any]:
        return {"convolutions": dict(self.convolutions.most_common()), "int8_convolutions": self.int8_convolutions}


def executed_kernels(compiled: Any) -> KernelSummary:
    """The convolution kernels of an `openvino.CompiledModel`, read from its executed graph."""
    summary = KernelSummary()
    for op in compiled.get_runtime_model().get_ordered_ops():
        if _info(op, "layerType") != "Convolution":
            continue
        kernel, precision = _info(op, "primitiveType"), _info(op, "runtimePrecision")
        summary.convolutions[kernel or "unknown"] += 1
        summary.int8_convolutions += is_int8_kernel(kernel, precision)
    return summary
