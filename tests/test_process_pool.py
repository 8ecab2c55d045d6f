"""The in-process engine's worker processes: same numbers as one client at a time, really other
processes, and a client past the deadline (or one that dies) stopped without harming the run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

import experiments.engines as engines
from experiments.engines import run_inprocess, task_identity
from fedkd.config import ConfigError
from server.inprocess.grid import InProcessGrid
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _numbers(results):
    return [(r["alma"], r["global_acc"], r["client_acc"], r["weights"]) for r in results.rounds]


class NotingApp:
    """Builds fedkd's app, noting the process each call runs in (picklable: the forkserver's
    workers, used with client-threads > 1, receive it pickled)."""

    def __init__(self, folder, make_app) -> None:
        self.folder, self.make_app = folder, make_app

    def __call__(self, cfg):
        return _Noted(self.folder, self.make_app(cfg))


class _Noted:
    def __init__(self, folder, app) -> None:
        self.folder, self.app = folder, app

    def __call__(self, message, context):
        (self.folder / f"pid-{os.getpid()}").touch()
        return self.app(message, context)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"algorithm": "knfu-guard", "client-threads": 2}, {"algorithm": "fedavg", "models": "mlp"}],
    ids=["knfu", "knfu-guard-2-threads", "fedavg"],
)
def test_worker_processes_give_the_numbers_of_one_client_at_a_time(overrides, tmp_path, monkeypatch):
    serial = run_inprocess(tiny_config(rounds=3, workers=1, **overrides))
    monkeypatch.setattr(engines, "make_client_app", NotingApp(tmp_path, engines.make_client_app))
    pooled = run_inprocess(tiny_config(rounds=3, workers=2, **{"worker-pool": "processes", **overrides}))
    assert _numbers(pooled) == _numbers(serial)
    pids = {int(path.name.split("-")[1]) for path in tmp_path.glob("pid-*")}
    assert len(pids) >= 2 and os.getpid() not in pids
    assert not multiprocessing.active_children()  # the run stopped its workers


def test_worker_pool_must_be_known():
    with pytest.raises(ConfigError, match="unknown worker-pool 'fibres'; allowed: processes, threads"):
        tiny_config(**{"worker-pool": "fibres"})


class Scripted:
    """A picklable ClientApp stand-in: counts calls in the node's state; in the first batch
    (group "1") partition ``hang`` sleeps and partition ``die`` ends its process abruptly."""

    def __init__(self, hang: int | None = None, die: int | None = None) -> None:
        self.hang, self.die = hang, die

    def __call__(self, msg: Message, context) -> Message:
        pid = context.node_config["partition-id"]
        calls = int(context.state["n"]["calls"]) if "n" in context.state else 0
        first = msg.metadata.group_id == "1"
        if first and pid == self.hang:
            time.sleep(60)
        if first and pid == self.die:
            time.sleep(0.3)  # the others have started (or wait in the queue) when it dies
            os._exit(3)
        if first and self.die is not None:
            time.sleep(1.0)  # still running when the dying worker breaks the pool
        context.state["n"] = ConfigRecord({"calls": calls + 1})
        return Message(RecordDict({"config": ConfigRecord({"pid": pid, "calls": calls + 1})}), reply_to=msg)


def _grid(app: Scripted, nodes: int) -> InProcessGrid:
    return InProcessGrid(app, nodes, workers=2, app_factory=lambda: app)


def _ask(grid: InProcessGrid, timeout: float | None = None, batch: int = 1) -> dict[int, object]:
    messages = [
        grid.create_message(RecordDict(), "query.hello", node, group_id=str(batch))
        for node in grid.get_node_ids()
    ]
    replies = grid.send_and_receive(messages, timeout=timeout)
    pid_of = {node: grid.context(node).node_config["partition-id"] for node in grid.get_node_ids()}
    return {pid_of[r.metadata.src_node_id]: r for r in replies}


def test_a_client_past_the_deadline_is_stopped_and_its_node_keeps_its_state():
    with task_identity(1):
        grid = _grid(Scripted(hang=0), 4)
        started = time.monotonic()
        first = _ask(grid, timeout=3.0)
        assert time.monotonic() - started < 20  # not the hanging client's 60 s
        assert sorted(first) == [1, 2, 3] and not multiprocessing.active_children()
        again = _ask(grid, batch=2)  # fresh workers; node 0 never finished a call: state untouched
        grid.close()
    assert {pid: r.content["config"]["calls"] for pid, r in again.items()} == {0: 1, 1: 2, 2: 2, 3: 2}


def test_a_client_process_that_dies_is_an_error_reply_and_the_next_batch_runs():
    with task_identity(1):
        grid = _grid(Scripted(die=1), 3)
        first = _ask(grid)
        assert first[1].has_error() and "client process died" in first[1].error.reason
        # the others, taken down with the broken pool, were run again and answered
        assert not first[0].has_error() and not first[2].has_error()
        again = _ask(grid, batch=2)
        grid.close()
    assert not any(r.has_error() for r in again.values()) and again[1].content["config"]["calls"] == 1


def test_ctrl_c_on_the_server_stops_the_workers():
    """A real SIGINT while the server waits for a hanging client: the workers (which ignore
    SIGINT themselves) are stopped with it."""
    # Python's own handler, as in `fedkd run` (an earlier test in this process may have left
    # another one installed: Flower's simulation registers its own)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with task_identity(1):
            grid = _grid(Scripted(hang=0), 3)
            timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                _ask(grid)
    finally:
        signal.signal(signal.SIGINT, before)
    assert time.monotonic() - started < 20 and not multiprocessing.active_children()


def test_worker_pool_threads_from_the_config_keeps_every_client_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "make_client_app", NotingApp(tmp_path, engines.make_client_app))
    run_inprocess(tiny_config(rounds=1, workers=2, **{"worker-pool": "threads"}))
    assert {path.name for path in tmp_path.glob("pid-*")} == {f"pid-{os.getpid()}"}


def test_a_killed_server_leaves_no_worker_behind(tmp_path):
    """Workers ask Linux to kill them with their server (a SIGKILL runs no cleanup)."""
    server = subprocess.Popen(
        [sys.executable, "-c", "from tests.test_process_pool import serve_then_idle; serve_then_idle()"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    workers = [int(pid) for pid in server.stdout.readline().split()]
    assert workers
    server.kill()
    server.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def serve_then_idle() -> None:
    """A server whose fresh workers sit idle: prints their pids, then waits to be killed."""
    with task_identity(1):
        grid = _grid(Scripted(hang=0), 3)
        _ask(grid, timeout=0.5)  # the hanging call is stopped; the next batch gets fresh workers
        _ask(grid, batch=2)
        pool = grid._processes._executor
        print(" ".join(str(p.pid) for p in pool._processes.values()), flush=True)
        time.sleep(60)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, not reaped
    except OSError:
        return False


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_offloading_idle_clients_changes_no_number(pool):
    # 2 of 4 clients a round: some sit rounds out, their state on disk meanwhile
    cfg = tiny_config(rounds=3, workers=2, fraction=0.5, **{"num-clients": 4, "worker-pool": pool})
    offloaded = run_inprocess(cfg.with_overrides({"offload-idle": True}))
    assert _numbers(offloaded) == _numbers(run_inprocess(cfg))


def test_an_idle_clients_state_waits_on_disk_between_calls():
    with task_identity(1):
        grid = InProcessGrid(Scripted(), 3, workers=1, offload_idle=True)
        _ask(grid, batch=2)
        folder = grid._offload.folder
        assert all(len(grid.context(node).state) == 0 for node in grid.get_node_ids())  # not in memory
        assert len(list(folder.glob("*.pkl"))) == 3 and (folder.stat().st_mode & 0o777) == 0o700
        again = _ask(grid, batch=2)
        grid.close()
    assert {pid: r.content["config"]["calls"] for pid, r in again.items()} == {0: 2, 1: 2, 2: 2}
    assert not folder.exists()  # the run's end removes it


def test_a_late_clients_state_goes_back_to_disk_too():
    with task_identity(1):
        grid = InProcessGrid(
            Scripted(hang=0), 3, workers=2, app_factory=lambda: Scripted(hang=0), offload_idle=True
        )
        _ask(grid, batch=2)  # every node now has a state, on disk
        late = _ask(grid, timeout=3.0)  # partition 0 hangs and is stopped
        folder = grid._offload.folder
        on_disk = len(list(folder.glob("*.pkl")))
        in_memory = [len(grid.context(node).state) for node in grid.get_node_ids()]
        grid.close()
    assert sorted(late) == [1, 2] and on_disk == 3 and in_memory == [0, 0, 0]
