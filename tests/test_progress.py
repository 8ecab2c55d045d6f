"""Progress inside a round: each client counted once per phase, bars on a terminal, lines in a
log, the replies (and so every number) untouched."""

from __future__ import annotations

import logging
import time

import pytest
from flwr.app import Message, MetricRecord, RecordDict

import server.progress as progress
from experiments.engines import run_experiment, task_identity
from server.progress import Phase, collect_replies, configure_progress
from tests.conftest import tiny_config


@pytest.fixture
def mode():
    """Set the process's progress mode for one test; back to off afterwards."""
    yield configure_progress
    configure_progress("off")


def _numbers(results):
    return [(r["alma"], r["client_acc"], r["weights"], r["bytes_up"]) for r in results.rounds]


def test_lines_count_every_client_of_every_phase_and_change_no_number(mode, monkeypatch):
    quiet = run_experiment(tiny_config())
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # every phase is "long": each says where it is
    mode("lines")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("flwr.fedkd").addHandler(handler)
    try:
        talkative = run_experiment(tiny_config())
    finally:
        logging.getLogger("flwr.fedkd").removeHandler(handler)
    assert _numbers(talkative) == _numbers(quiet)
    ends = [m for m in seen if "clients done in" in m]
    assert [m.split(":")[0] for m in ends] == [
        "starting clients",
        "round 1/2 local training",
        "round 1/2 distillation + evaluation",
        "round 2/2 local training",
        "round 2/2 distillation + evaluation",
    ]
    assert all(": 3/3 clients done in" in m for m in ends)
    assert any("ETA" in m for m in seen)


def test_a_bar_per_phase_goes_to_stderr(mode, capsys):
    mode("bar")
    run_experiment(tiny_config(rounds=1))
    err = capsys.readouterr().err
    for label in ("starting clients", "round 1/1 local training", "round 1/1 distillation + evaluation"):
        assert label in err
    assert "3/3" in err


def test_auto_is_lines_when_stderr_is_not_a_terminal(mode):
    mode("auto")
    assert progress.RoundProgress().mode == "lines"  # pytest captures stderr: not a terminal
    with pytest.raises(ValueError, match="allowed: off, auto, bar, lines"):
        configure_progress("loud")


class PullGrid:
    """Flower's grid shape (push, then pull): node n's reply is ready after n pulls; node 99 never."""

    pull_interval = 0.01

    def __init__(self) -> None:
        self.pulls, self.pushed = 0, []

    def push_messages(self, messages):
        self.pushed = list(messages)
        for i, msg in enumerate(self.pushed):
            msg.metadata.__dict__["_message_id"] = f"m{i}"
        return [m.metadata.message_id for m in self.pushed]

    def pull_messages(self, ids):
        self.pulls += 1
        ready = [
            m for m in self.pushed if m.metadata.message_id in ids and m.metadata.dst_node_id <= self.pulls
        ]
        return [Message(RecordDict({"m": MetricRecord({"x": 1.0})}), reply_to=m) for m in ready]


def test_flower_grids_are_pulled_until_every_reply_or_the_timeout(mode):
    with task_identity(1):
        messages = [Message(RecordDict(), dst_node_id=n, message_type="train.local") for n in (1, 2, 3, 99)]
        phase = Phase("round 1/1 local training", len(messages), "off")
        start = time.monotonic()
        replies = collect_replies(PullGrid(), messages, timeout=0.5, phase=phase)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert phase.done == 3 and 0.5 <= time.monotonic() - start < 5  # waited for node 99 until the timeout
    phase.reply(replies[0])  # the same reply told twice still counts once
    assert phase.done == 3
