"""results.json names the machine its numbers came from: bit-identity holds per CPU model and
torch build (docs/design.md), so both are recorded with torch's kernels and threads."""

from __future__ import annotations

import json

import torch

from fedkd.config import ExperimentConfig
from fedkd.environment import cpu_info, environment_info
from fedkd.results import RunResults

X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 ht

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve sve2 crc32\n"


def test_cpu_model_and_flags_from_cpuinfo():
    assert cpu_info(X86) == {
        "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
        "cpu_flags": "sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16",  # not fpu, ht
    }
    assert cpu_info(ARM)["cpu_flags"] == "asimd sve sve2"
    assert cpu_info(ARM)["cpu_model"]  # no model name line: platform.processor() or "unknown"
    assert cpu_info("")["cpu_flags"] == ""


def test_results_record_the_cpu_torch_build_and_threads(tmp_path):
    info = environment_info()
    for key in ("cpu_model", "cpu_flags", "torch_cpu_capability", "torch_config"):
        assert isinstance(info[key], str), key
    assert info["cpu_model"] and "PyTorch built with" in info["torch_config"]
    assert isinstance(info["torch_threads"], int) and info["torch_threads"] == torch.get_num_threads()
    results = RunResults(ExperimentConfig(), tmp_path / "results.json")
    results.flush()
    saved = json.loads((tmp_path / "results.json").read_text())["environment"]
    assert saved["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert {"cpu_model", "cpu_flags", "torch_config", "torch_threads"} <= set(saved)
