"""Run one experiment on an engine: Flower's Simulation Engine (Ray) or the in-process Grid.

Both engines execute the very same ServerApp main and ClientApp handlers with the config
bound into the apps (run_simulation passes no run_config), so on CPU they give identical
numbers for the same config.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import ServerApp
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import make_client_app
from experiments.stop_signals import give_up_later, interrupted, reason
from fedkd.atomic import remove_temp_files
from fedkd.config import ExperimentConfig
from fedkd.results import RESULTS_FILE, RunResults, mark_interrupted
from fedkd.training import resolve_device
from fedkd.validation import validate_config
from server.inprocess.grid import InProcessGrid
from server.server_app import make_server_app

OnRound = Callable[[dict[str, Any]], None] | None


@contextmanager
def task_identity(run_id: int) -> Iterator[None]:
    """Messages built outside a Flower runtime need the run/node/task ids set."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def inprocess_workers(cfg: ExperimentConfig) -> int:
    """``workers``, or (0) the cores this process may use, shared by ``client-threads``; never more
    than num-clients, the most clients a phase asks (validate_config caps ``workers`` the same)."""
    if cfg.run.workers:
        return cfg.run.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cfg.data.num_clients, cores // cfg.train.client_threads))


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """One process-wide intra-op thread count for the whole run (see client_compute)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_inprocess(
    cfg: ExperimentConfig,
    on_round: OnRound = None,
    client_app: ClientApp | None = None,
    resume: dict[str, Any] | None = None,
) -> RunResults:
    """``client_app`` replaces fedkd's own (tests inject failures through it)."""
    sink: list[RunResults] = []
    server_app = make_server_app(cfg, on_round, sink, resume)
    # worker processes build fedkd's own ClientApp themselves; an injected one runs on threads
    processes = client_app is None and cfg.run.worker_pool == "processes"
    grid = InProcessGrid(
        client_app if client_app is not None else make_client_app(cfg),
        cfg.data.num_clients,
        cfg.to_run_config(),
        workers=inprocess_workers(cfg),
        app_factory=functools.partial(make_client_app, cfg) if processes else None,
        client_threads=cfg.train.client_threads,
        on_cpu=resolve_device(cfg.train.device).type == "cpu",
        offload_idle=cfg.run.offload_idle,
    )
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_run_config())
    try:
        with task_identity(run_id=1), torch_threads(cfg.train.client_threads):
            server_app(grid, context)
    finally:
        grid.close()
        if cfg.run.out_dir:  # workers stopped mid-checkpoint leave their temp files
            remove_temp_files(cfg.run.out_dir)
    return sink[0]


def ray_backend_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """``client-threads`` CPUs and ``client-gpus`` GPUs per virtual client (a fraction packs
    several clients on one GPU without oversubscribing it); Ray quiet, no dashboard; with
    ``ray-address``, the simulation joins that Ray cluster instead of starting one."""
    return {
        "client_resources": {"num_cpus": cfg.train.client_threads, "num_gpus": cfg.run.client_gpus},
        "init_args": {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
            **({"address": cfg.run.ray_address} if cfg.run.ray_address else {}),
        },
    }


def run_ray(
    cfg: ExperimentConfig, on_round: OnRound = None, resume: dict[str, Any] | None = None
) -> RunResults:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silence a Ray FutureWarning
    sink: list[RunResults] = []
    try:
        flower_simulation(make_server_app(cfg, on_round, sink, resume), make_client_app(cfg), cfg)
    except (KeyboardInterrupt, SystemExit) as stop:
        signum = _signal_of(stop)
        if signum is None:
            raise
        # Flower runs the ServerApp on a thread no signal reaches: mark the results from here and
        # stop Ray; the CLI then exits at once instead of waiting on that thread.
        done = None if isinstance(stop, KeyboardInterrupt) else give_up_later(signum, None)
        mark = Path(cfg.run.out_dir) / RESULTS_FILE if cfg.run.out_dir else None
        if mark is not None:  # final: what the ServerApp thread writes after it keeps this status
            mark_interrupted(mark, reason(signum))
        _shutdown_ray()
        if mark is not None:
            remove_temp_files(mark.parent)  # of clients stopped mid-checkpoint
        if done is not None:
            done.set()
        raise interrupted(signum) from None
    if not sink:
        raise RuntimeError("the Ray simulation ended without results (see the log above)")
    return sink[0]


def _signal_of(stop: BaseException) -> int | None:
    """The signal behind a stop: ours (Interrupted), a plain Ctrl-C, or SIGTERM through the
    handler ray.init installs in place of ours (it raises SystemExit(SIGTERM)); None: no signal."""
    if isinstance(stop, KeyboardInterrupt):
        return getattr(stop, "signum", signal.SIGINT)
    return signal.SIGTERM if stop.code == signal.SIGTERM else None


def flower_simulation(server_app: ServerApp, client_app: ClientApp, cfg: ExperimentConfig) -> None:
    """The one call into Flower's Simulation Engine: ``run_simulation``, deprecated in Flower 1.41
    but the only public API that takes app objects with the config bound into them. Why it stays
    and what `flwr run`'s runtime would cost instead: docs/engines.md. A Flower upgrade that drops
    it changes this function only."""
    from flwr.simulation import run_simulation  # imports Ray: only when the Ray engine runs

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.data.num_clients,
        backend_config=ray_backend_config(cfg),
    )


def _shutdown_ray() -> None:
    try:
        import ray

        ray.shutdown()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


ENGINE_RUNNERS: dict[str, Callable[..., RunResults]] = {
    "inprocess": run_inprocess,
    "ray": run_ray,
}


def run_experiment(
    cfg: ExperimentConfig, on_round: OnRound = None, resume: dict[str, Any] | None = None
) -> RunResults:
    """``resume``: the results.json payload of an interrupted run of ``cfg`` (see run_federation)."""
    validate_config(cfg)
    return ENGINE_RUNNERS[cfg.run.engine](cfg, on_round, resume=resume)
