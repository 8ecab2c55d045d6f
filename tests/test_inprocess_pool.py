"""The in-process engine's clients side by side: same numbers, really concurrent, timeouts kept."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from experiments.engines import inprocess_workers, run_inprocess, task_identity
from fedkd.errors import ConfigError
from server.inprocess.grid import InProcessGrid
from tests.conftest import tiny_config


def _numbers(results):
    return [(r["alma"], r["global_acc"], r["client_acc"], r["weights"]) for r in results.rounds]


class Threads:
    """fedkd's ClientApp, noting the thread each call runs on."""

    def __init__(self, cfg) -> None:
        from clients.client_app import make_client_app

        self.app, self.names = make_client_app(cfg), set()

    def __call__(self, msg, context):
        self.names.add(threading.current_thread().name)
        return self.app(msg, context)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"algorithm": "knfu-guard", "client-threads": 2}, {"algorithm": "fedavg", "models": "mlp"}],
    ids=["knfu", "knfu-guard-2-threads", "fedavg"],
)
def test_clients_side_by_side_give_the_numbers_of_one_at_a_time(overrides):
    serial_cfg, pooled_cfg = (
        tiny_config(rounds=3, workers=1, **overrides),
        tiny_config(rounds=3, workers=3, **overrides),
    )
    serial_app, pooled_app = Threads(serial_cfg), Threads(pooled_cfg)
    serial = run_inprocess(serial_cfg, client_app=serial_app)
    pooled = run_inprocess(pooled_cfg, client_app=pooled_app)
    assert _numbers(pooled) == _numbers(serial)
    # workers=1 trains on the server's own thread (only the hello, under its timeout, goes on one)
    assert threading.main_thread().name in serial_app.names and pooled_app.names == {"fedkd-client"}


def test_models_built_on_many_threads_at_once_get_their_seeded_init():
    from concurrent.futures import ThreadPoolExecutor

    from fedkd.models import build_model

    names = ["mlp", "cnn-s", "mlp", "cnn-m"] * 4

    def build(i: int):
        return build_model(names[i], (1, 8, 8), 10, seed=i % 3).state_dict()

    serial = [build(i) for i in range(len(names))]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(build, range(len(names))))
    for a, b in zip(serial, parallel, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_default_workers_follow_the_cores_and_client_threads():
    assert inprocess_workers(tiny_config(workers=2)) == 2
    cores = inprocess_workers(tiny_config())
    assert cores >= 1 and inprocess_workers(tiny_config(**{"client-threads": 256})) == 1


def test_workers_never_outnumber_the_clients(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert inprocess_workers(tiny_config()) == 3  # 64 cores, 3 clients: 3 workers, not 64
    with pytest.raises(ConfigError, match=r"workers=4 is invalid; allowed: 0..num-clients \(3\)"):
        tiny_config(workers=4)


class Gate:
    """A ClientApp stand-in: every call waits at a barrier of ``parties`` (so it only returns when
    that many calls run at once); ``hold`` blocks one partition until released."""

    def __init__(self, parties: int, hold: int | None = None) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.hold, self.release = hold, threading.Event()

    def __call__(self, msg: Message, context) -> Message:
        pid = context.node_config["partition-id"]
        if pid == self.hold:
            self.release.wait(30)
        else:
            self.barrier.wait()
        return Message(RecordDict({"config": ConfigRecord({"pid": pid})}), reply_to=msg)


def _messages(grid: InProcessGrid) -> list[Message]:
    return [
        grid.create_message(RecordDict(), "query.hello", node, group_id="1") for node in grid.get_node_ids()
    ]


def test_calls_really_run_side_by_side():
    with task_identity(1):
        grid = InProcessGrid(Gate(parties=3), 3, workers=3)
        replies = list(grid.send_and_receive(_messages(grid)))
    assert len(replies) == 3 and not any(r.has_error() for r in replies)  # all three met at the barrier


def test_a_hanging_client_is_left_behind_and_stays_busy_while_the_others_answer():
    gate = Gate(parties=2, hold=0)
    with task_identity(1):
        grid = InProcessGrid(gate, 3, workers=3)
        first = list(grid.send_and_receive(_messages(grid), timeout=3.0))
        assert sorted(r.content["config"]["pid"] for r in first) == [1, 2]
        again = list(grid.send_and_receive(_messages(grid)[:1], timeout=3.0))  # partition 0's node
        gate.release.set()
    assert again[0].has_error() and "still busy" in again[0].error.reason


def test_messages_not_started_by_the_deadline_are_never_started():
    started = []

    def slow(msg: Message, context) -> Message:
        started.append(context.node_config["partition-id"])
        time.sleep(1.0)
        return Message(RecordDict(), reply_to=msg)

    with task_identity(1):
        grid = InProcessGrid(slow, 6, workers=2)
        replies = list(grid.send_and_receive(_messages(grid), timeout=0.5))
        time.sleep(1.5)  # a queued call, had it been started late, would have run by now
    assert replies == [] and sorted(started) == [0, 1]
