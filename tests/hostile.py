"""A hostile client for the reply-decoder tests: fedkd's real ClientApp, except that the chosen
partitions' replies are replaced by forgeries, replayed or delivered twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flwr.app import Message

from clients.client_app import make_client_app
from experiments import engines
from experiments.engines import run_inprocess
from fedkd.results import RunResults
from server.inprocess.grid import InProcessGrid

# (the honest reply, the message it answers, the partition's earlier honest replies) -> a forgery,
# "duplicate" (deliver the honest reply twice) or None (send the honest reply)
Act = Callable[[Message, Message, list[Message]], Message | str | None]


class Hostile:
    """Partitions ``bad`` answer the messages of ``phases`` (all, the hello included, when None)
    through ``act``."""

    def __init__(self, cfg, act: Act, bad: tuple[int, ...] = (1,), phases: tuple[str, ...] | None = None):
        self.app, self.act, self.bad, self.phases = make_client_app(cfg), act, bad, phases
        self.history: dict[int, list[Message]] = {pid: [] for pid in bad}
        self.tampered: list[tuple[int, int, str]] = []  # (partition, round, phase) forged or doubled
        self.doubled: set[str] = set()  # ids of the messages whose reply goes out twice
        self.pid_of_node: dict[int, int] = {}  # what the test knows, whatever the replies say

    def __call__(self, msg: Message, context) -> Message:
        reply = self.app(msg, context)
        pid, kind = int(context.node_config["partition-id"]), msg.metadata.message_type
        self.pid_of_node[context.node_id] = pid
        if pid not in self.bad or kind not in (self.phases or (kind,)):
            if pid in self.bad:
                self.history[pid].append(reply)
            return reply
        forged = self.act(reply, msg, self.history[pid])
        self.history[pid].append(reply)
        if forged is None:
            return reply
        self.tampered.append((pid, int(msg.metadata.group_id), kind))
        if forged == "duplicate":
            self.doubled.add(msg.metadata.message_id)
            return reply
        return forged


def run_hostile(cfg, hostile: Hostile) -> RunResults:
    """A real in-process run whose grid delivers the replies ``hostile`` doubles twice."""

    class DoublingGrid(InProcessGrid):
        def pull_messages(self, message_ids):
            replies = list(super().pull_messages(message_ids))
            return replies + [r for r in replies if r.metadata.reply_to_message_id in hostile.doubled]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engines, "InProcessGrid", DoublingGrid)
        return run_inprocess(cfg, client_app=hostile)


def refused(results: RunResults, hostile: Hostile | None = None) -> dict[tuple[int, int, str], str]:
    """(partition, round, phase) -> reason, for every reply the run recorded as refused (round 0:
    the hello); a reply that gave no readable partition id is ``hostile``'s by its node id."""
    hello = [(0, f) for f in results.payload["hello_failed_clients"]]
    rounds = [(record["round"], f) for record in results.rounds for f in record["failed_clients"]]
    known = hostile.pid_of_node if hostile is not None else {}

    def partition(f: dict) -> int:
        return known.get(f["node_id"], -1) if f["partition_id"] is None else f["partition_id"]

    return {(partition(f), rnd, f["phase"]): f["reason"] for rnd, f in hello + rounds}
