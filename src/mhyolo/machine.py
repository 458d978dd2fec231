"""What CPU a figure was measured on.

Latency, and which INT8 kernels exist at all, depend on the instruction set: an AMD EPYC with
AVX2 only and a Xeon with AVX-512 VNNI and AMX run the same INT8 model at very different
speeds. Every benchmark names the CPU, the threads it used and the flags that matter, so
figures from two machines are never read as comparable by accident.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# /proc/cpuinfo flag -> what it is called in reports; the ones that change INT8/BF16 speed.
ISA_FLAGS = {
    "avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
}


@dataclass
class CpuInfo:
    name: str
    logical_cores: int
    threads_used: int | None = None
    isa: list[str] = field(default_factory=list)  # report names from ISA_FLAGS, in that order
    torch_kernels: str | None = None  # the widest vector kernels PyTorch dispatches to here

    def has(self, flag: str) -> bool:
        return ISA_FLAGS.get(flag, flag) in self.isa

    def describe(self) -> str:
        threads = f", {self.threads_used} thread(s) used" if self.threads_used else ""
        flags = ", ".join(self.isa) if self.isa else "no AVX2"
        return f"{self.name} ({self.logical_cores} logical cores{threads}; {flags})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpuinfo_fields(text: str) -> tuple[str | None, set[str]]:
    name, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def cpu_info(threads_used: int | None = None, cpuinfo: str | None = None) -> CpuInfo:
    """This machine's CPU (from /proc/cpuinfo where there is one; `cpuinfo` replaces it in tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name, flags = _cpuinfo_fields(cpuinfo)
    try:
        import torch

        kernels: str | None = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        kernels = None
    return CpuInfo(name=name or platform.processor() or platform.machine() or "unknown CPU",
                   logical_cores=os.cpu_count() or 1, threads_used=threads_used,
                   isa=[label for flag, label in ISA_FLAGS.items() if flag in flags], torch_kernels=kernels)


@dataclass
class WeightRange:
    """ONNX Runtime's INT8 weight range for a CPU, and why."""

    reduce_range: bool  # True: 7-bit weights
    reason: str


def ort_weight_range(cpu: CpuInfo) -> WeightRange:
    """Full 8-bit weights where the CPU has VNNI (AVX-512 VNNI, AVX-VNNI or AMX-INT8: the u8 x s8
    products are summed into 32 bits, nothing saturates); 7-bit weights only where it has not (AVX2's
    `vpmaddubsw` sums pairs into a saturating int16: 2 x 255 x 127 > 32767)."""
    vnni = [label for flag, label in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                                      ("amx_int8", "AMX-INT8")) if cpu.has(flag)]
    if vnni:
        return WeightRange(False, f"8-bit weights: {cpu.name} has {', '.join(vnni)} (32-bit sums, no saturation)")
    return WeightRange(True, f"7-bit weights: {cpu.name} has no VNNI, and 8-bit weights would saturate AVX2's "
                             "16-bit pair sums")
