"""What the benchmarks share: a fresh process per measurement (settings never share caches), the
memory of a whole process tree (proportional set sizes), and the plain loop that the engines are
compared with."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time


def measure_in_fresh_process(script: str, args: list[str], what: str) -> dict:
    """Run ``python script *args``; its last stdout line is the measurement as JSON."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{what} failed (exit status {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


SAMPLE_EVERY_S = 1.0  # memory peaks (data, models, round records) last for seconds


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size: a page shared by n processes (forked workers) counts 1/n in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def tree_memory_bytes(root: int) -> int:
    """Memory of ``root`` and all its descendants (worker processes, Ray), from /proc: the sum of
    their proportional set sizes (resident memory where the kernel has no smaps_rollup), so the
    pages forked workers share with the server are counted once."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        pss = _pss_bytes(pid)
        total += pss if pss is not None else rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Samples this process tree's memory (tree_memory_bytes) every SAMPLE_EVERY_S in the ``with``
    block: reading smaps_rollup costs ~3 ms per process, so more often would slow what it measures."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_memory_bytes(os.getpid()))
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def plain_loop(cfg, on_round) -> None:
    """The same computation as the engines (local step, fusion, distillation; the same seeded
    ``fraction`` of clients per round), with no messaging and one client at a time."""
    import numpy as np

    from fedkd.client_steps import distill_step, local_step
    from fedkd.fusion import FUSIONS
    from fedkd.seeding import numpy_rng

    fusion = FUSIONS.get(cfg.fusion.algorithm)
    pids = list(range(cfg.data.num_clients))
    states: dict[int, object] = {}
    k = min(len(pids), max(cfg.run.min_replies, math.ceil(cfg.run.fraction * len(pids))))
    for server_round in range(1, cfg.run.rounds + 1):
        start = time.perf_counter()
        asked = (
            pids
            if k == len(pids)
            else sorted(numpy_rng(cfg.run.seed, "participation", server_round).choice(pids, k, replace=False))
        )
        preds, compute = [], 0.0
        for pid in asked:
            step = local_step(cfg, int(pid), server_round, states.get(pid), fusion.uploads == "predictions")
            states[pid] = step.state
            compute += step.metrics["compute-seconds"]
            preds.append(step.predictions.astype(np.float32).astype(np.float64))
        result = fusion.fuse(np.stack(preds), cfg.fusion)
        for i, pid in enumerate(asked):
            step = distill_step(cfg, int(pid), server_round, states[pid], result.targets[i])
            states[pid] = step.state
            compute += step.metrics["compute-seconds"]
        on_round(
            {"wall_s": time.perf_counter() - start, "compute_s": compute, "bytes_up": 0, "bytes_down": 0}
        )


def run_driver(driver: str, cfg) -> dict:
    """Run ``cfg`` on ``plain`` (the loop above) or a fedkd engine, recording every round.

    Returns the round records, start-up seconds (until round 1 began), total seconds and the
    process tree's peak memory in MB (proportional set sizes)."""
    records: list[dict] = []
    first_round_end: list[float] = []

    def on_round(record: dict) -> None:
        records.append(record)
        if not first_round_end:
            first_round_end.append(time.perf_counter())

    start = time.perf_counter()
    with PeakMemory() as memory:
        if driver == "plain":
            plain_loop(cfg, on_round)
        else:
            from experiments.engines import run_experiment

            run_experiment(cfg, on_round)
    return {
        "records": records,
        "startup_s": first_round_end[0] - start - records[0]["wall_s"],
        "total_s": time.perf_counter() - start,
        "peak_mb": memory.peak / 2**20,
    }
