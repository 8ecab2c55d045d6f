"""Sweeps on a Ray cluster: one Ray task per run, with the same runs.jsonl table, lock and resume
as local sweeps (experiments/sweep.py); rows are appended by this driver as tasks finish."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments.stop_signals import GRACE_S, reason, signal_taken
from experiments.sweep import (
    RUNS_FILE,
    PlannedRun,
    append_row,
    execute,
    pending_runs,
    repair_table,
    sweep_lock,
)
from fedkd.atomic import remove_temp_files
from fedkd.config import ExperimentConfig
from fedkd.results_files import RESULTS_FILE, mark_interrupted


def run_sweep_on_ray(
    planned: list[PlannedRun], out_dir: str | Path, retry_failed: bool = False, ray_address: str = ""
) -> Iterator[dict[str, Any]]:
    """Run what is not yet in the table as Ray tasks on ``ray_address`` (empty: a local Ray)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(out):
        yield from _run_on_ray(planned, out, retry_failed, ray_address)


def ray_task_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What one run asks Ray for: its in-process clients' threads (``workers`` x
    ``client-threads`` CPUs) and their GPU shares (``workers`` x ``client-gpus``, at most one)."""
    workers = max(1, cfg.run.workers)
    return {
        "num_cpus": float(workers * cfg.train.client_threads),
        "num_gpus": min(1.0, workers * cfg.run.client_gpus),
    }


RAY_ENV = ("FEDKD_DATA_DIR", "FEDKD_CACHE_DIR", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION")


def _ray_runtime_env() -> dict[str, Any]:
    """fedkd's own source root on the workers' path, and the data/cache folders this driver uses
    (a cluster's workers were started without them)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {key: os.environ[key] for key in RAY_ENV if key in os.environ}
    return {"env_vars": {"PYTHONPATH": root, **env}}


def _as_ray_task(run: PlannedRun) -> PlannedRun:
    """Inside a Ray task a run uses the in-process engine (``workers`` 1 unless set) and an
    absolute data folder; neither is part of its identity."""
    # threads: a Ray worker runs gRPC threads, and forking from it is unsafe
    overrides: dict[str, Any] = {
        "engine": "inprocess",
        "workers": run.config.run.workers or 1,
        "worker-pool": "threads",
    }
    if run.config.data.data_dir:
        overrides["data-dir"] = str(Path(run.config.data.data_dir).resolve())
    return PlannedRun(run.run_id, run.axes, run.config.with_overrides(overrides))


def _run_on_ray(
    planned: list[PlannedRun], out: Path, retry_failed: bool, ray_address: str
) -> Iterator[dict[str, Any]]:
    """Each pending run as a Ray task; rows appended here as tasks finish: the same table, lock
    and resume as locally. A task that dies (worker lost, out of memory) is recorded as failed.
    ``out`` must be a folder every Ray node can write (a shared file system off one machine)."""
    import ray  # only here: local sweeps never need it
    from ray.exceptions import RayError

    table = out / RUNS_FILE
    repair_table(table)
    todo = [_as_ray_task(run) for run in pending_runs(planned, table, retry_failed)]
    if not todo:
        return
    on_sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(
        address=ray_address or None,
        include_dashboard=False,
        logging_level=logging.ERROR,
        runtime_env=_ray_runtime_env(),
    )
    if threading.current_thread() is threading.main_thread():  # ray.init put sys.exit() there
        signal.signal(signal.SIGTERM, on_sigterm)  # ours (experiments/stop_signals.py), or the default
    pending: dict[Any, PlannedRun] = {}  # task -> its run, while it runs
    try:
        remote = ray.remote(execute)
        pending = {
            remote.options(**ray_task_resources(run.config)).remote(run, str(out.resolve())): run
            for run in todo
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                row = ray.get(done[0])
            except RayError as exc:
                message = " ".join(str(exc).split())[:400]
                row = {
                    "id": run.run_id,
                    "axes": run.axes,
                    "config": run.config.to_run_config(),
                    "status": "failed",
                    "error": f"{type(exc).__name__}: {message}",
                }
            append_row(table, row)
            yield row
    except (KeyboardInterrupt, GeneratorExit):  # a signal, here or where the rows are consumed
        _interrupt_tasks(ray, pending, out, signal_taken())
        raise
    finally:
        ray.shutdown()


def _interrupt_tasks(ray: Any, pending: dict[Any, PlannedRun], out: Path, signum: int) -> None:
    """Cancel the runs in flight: Ray raises KeyboardInterrupt in each, whose run then marks its
    results and removes its files (well under a second). A task still running after GRACE_S / 2
    (deaf to the cancel, or stuck in its cleanup) is killed, its worker process ended, before its
    results are marked and its temp files removed from here: a live task would write over the mark."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs to its end
    for ref in pending:
        ray.cancel(ref)
    refs = list(pending)
    if refs:  # within the driver's own grace (experiments/stop_signals.py)
        _, stuck = ray.wait(refs, num_returns=len(refs), timeout=GRACE_S / 2)
        for ref in stuck:
            ray.cancel(ref, force=True)
        if stuck:
            ray.wait(stuck, num_returns=len(stuck), timeout=GRACE_S / 4)
    for run in pending.values():
        folder = out / "runs" / run.run_id
        mark_interrupted(folder / RESULTS_FILE, reason(signum))
        remove_temp_files(folder)
