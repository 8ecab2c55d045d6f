"""What the benchmarks share: a fresh process per measurement (settings never share caches), the
memory of a whole process tree (proportional set sizes), and the plain loop that the engines are
compared with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


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
    """The engines' computation with no messaging and one client at a time: fedkd's client steps
    (fedkd/client_steps.py) and the round loop's own server side (server/strategy.py: the same
    seeded ``fraction`` of clients, its exchange's combine with the algorithm's ``fuse_round`` and
    server state, what each client is sent), uploads and targets rounded as they travel (float32,
    withheld rows). Refuses what only messages carry (weight uploads, which Flower's FedAvg
    aggregates as reply messages) and the client mods (noise, compression). Each round's record:
    seconds, the fusion weights and, in evaluated rounds, each client's accuracies."""
    import numpy as np

    from fedkd.client_steps import distill_step, local_step
    from server.round_state import RoundOutcome
    from server.strategy import KnowledgeFusionStrategy

    refused = plain_loop_refusal(cfg)
    if refused:
        raise ValueError(refused)
    strategy = KnowledgeFusionStrategy(cfg)  # its exchange holds the server state across rounds
    fusion = strategy.fusion
    exchange, pids = strategy.exchange, list(range(cfg.data.num_clients))
    states: dict[int, object] = {}
    for server_round in range(1, cfg.run.rounds + 1):
        start = time.perf_counter()
        out = RoundOutcome(asked=strategy.asked_nodes({p: p for p in pids}, server_round))
        for pid in out.asked:
            knowledge = _received(cfg, exchange.local_content(pid), server_round)
            step = local_step(cfg, pid, server_round, states.get(pid), fusion.uploads.anything, knowledge)
            states[pid] = step.state
            out.tally(pid, step.metrics)
            out.node_of[pid] = pid
            out.accepted[pid] = _sent(fusion, step.predictions, step.counts)
        contents, weights = strategy._combine(out, out.asked, server_round)  # the round loop's own
        evaluated, scores = strategy.evaluates(server_round), {"client_acc": {}, "client_global_acc": {}}
        for pid in out.asked:
            content = contents.get(pid) or exchange.distill_content(pid)  # no fusion: what it holds
            target = _received(cfg, content, server_round)
            step = distill_step(cfg, pid, server_round, states[pid], target, evaluate=evaluated)
            states[pid] = step.state
            out.tally(pid, step.metrics)
            if evaluated:
                scores["client_acc"][pid] = step.metrics["local-acc"]
                scores["client_global_acc"][pid] = step.metrics["global-acc"]
        exchange.confirm(out.asked)
        on_round(
            {
                "round": server_round,
                "wall_s": time.perf_counter() - start,
                "compute_s": out.compute_s,
                "bytes_up": 0,
                "bytes_down": 0,
                "weights": np.asarray(weights).tolist(),
                **scores,
            }
        )


def plain_loop_refusal(cfg) -> str | None:
    """Why the plain loop cannot run ``cfg`` (one line), or None."""
    from fedkd.run_plan import run_plan

    fusion = run_plan(cfg).algorithm
    if fusion.uploads_weights:
        return (
            f"plain loop: {cfg.fusion.algorithm} uploads {fusion.uploads}, which only messages carry "
            "(Flower's FedAvg aggregates reply messages); supported: uploads of predictions, "
            "class-predictions, class-prototypes or nothing"
        )
    if cfg.privacy.mechanism != "none" or cfg.fusion.compression != "none":
        return "plain loop: noise and compression are client mods on messages; supported: both none"
    return None


def _sent(fusion, soft, counts):
    """An upload as the server's exchange accepts it after the wire (float32; withheld rows and
    absent classes all-NaN; class counts of the rows present): None when nothing is uploaded."""
    if soft is None:
        return None
    import numpy as np

    from fedkd.protocol import dense_soft, sparse_arrays

    values = dense_soft(sparse_arrays(soft), *soft.shape, None)
    if not fusion.uploads_class_knowledge:
        return values
    present = ~np.isnan(soft).all(axis=1)
    return values, None if counts is None else counts[present].astype(np.float32).astype(np.float64)


def _received(cfg, content, server_round: int):
    """The target (or per-class knowledge) in a message's content as the client decodes it; None
    when it holds none."""
    from fedkd.fusion import knowledge_rows
    from fedkd.protocol import SOFT, TARGET_KEY, dense_soft

    if TARGET_KEY not in content:
        return None
    arrays = {name: arr.numpy() for name, arr in content[TARGET_KEY].items()}
    return dense_soft(arrays, knowledge_rows(cfg, server_round), arrays[SOFT].shape[1], None)


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


def provenance() -> str:
    """The commit measured (``-dirty``: with uncommitted changes outside bench/results, whose
    files each run rewrites), the time, the load."""
    root = str(Path(__file__).resolve().parents[1])

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = "-dirty" if commit and git("status", "--porcelain", "--", ".", ":!bench/results") else ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"{when}, at {commit or 'unknown'}{dirty}, load average {os.getloadavg()[0]:.2f} at the start"
