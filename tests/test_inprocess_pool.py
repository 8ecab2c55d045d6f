"""The in-process engine's clients side by side: same numbers, really concurrent, timeouts kept."""

from __future__ import annotations

import threading

from flwr.app import ConfigRecord, Message, RecordDict

from experiments.engines import inprocess_workers, run_inprocess, task_identity
from server.inprocess_grid import InProcessGrid
from tests.conftest import tiny_config


def _numbers(results):
    return [(r["alma"], r["global_acc"], r["client_acc"], r["weights"]) for r in results.rounds]


def test_clients_side_by_side_give_the_numbers_of_one_at_a_time():
    serial = run_inprocess(tiny_config(rounds=3, workers=1))
    pooled = run_inprocess(tiny_config(rounds=3, workers=3))
    assert _numbers(pooled) == _numbers(serial)


def test_default_workers_follow_the_cores_and_client_threads():
    assert inprocess_workers(tiny_config(workers=5)) == 5
    cores = inprocess_workers(tiny_config())
    assert cores >= 1 and inprocess_workers(tiny_config(**{"client-threads": 256})) == 1


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
