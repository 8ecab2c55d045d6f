"""What a run's numbers depend on besides its config: versions, the CPU and its instruction set,
torch's build and threads (results.json's ``environment``; bit-identity holds per machine)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy
import torch

# Instruction-set extensions that change which kernels torch runs on CPU (x86 and Arm names),
# recorded when the CPU has them: results are bit-identical per machine, not across these.
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
)


def cpu_info(cpuinfo: str | None = None) -> dict[str, str]:
    """The CPU model and its relevant instruction-set flags (space-separated, in CPU_FLAGS
    order), from /proc/cpuinfo where there is one (``cpuinfo``: its text, for tests), else
    platform.processor(); "unknown" where neither says."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())  # x86: flags, Arm: Features
    return {
        "cpu_model": fields.get("model name") or platform.processor() or "unknown",
        "cpu_flags": " ".join(f for f in CPU_FLAGS if f in flags),
    }


def environment_info() -> dict[str, str | bool | int]:
    """What the numbers depend on besides the config: versions, the CPU and its instruction
    set, torch's build and the kernels it picked, its intra-op threads."""
    info: dict[str, str | bool | int] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": bool(torch.cuda.is_available()),
        **cpu_info(),
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch_threads": int(torch.get_num_threads()),
        "torch_config": torch.__config__.show(),
    }
    for package in ("flwr", "fedkd"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:  # metadata is informative only
            pass
    return info
