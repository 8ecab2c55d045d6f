"""Which node holds which partition, and whether a reply can be trusted to say so.

A node states its partition id in the hello (once, before round 1) and keeps it: a reply that
changes it, or a partition id that two nodes claim, is refused. Kept apart from the round loop
(server/strategy.py) because it is bookkeeping about nodes, not about rounds.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedkd.protocol import HELLO, INFO_KEY, ProtocolError
from server.progress import RoundProgress, collect_replies
from server.replies import Decoded, PhaseRequests, Rejected, config_of, decode_reply

log = logging.getLogger("flwr.fedkd")


class DuplicatePartition(ProtocolError):
    def __init__(self, pid: int, owner: int | None) -> None:
        super().__init__(f"partition id {pid} is claimed by another node" + (f" ({owner})" if owner else ""))
        self.pid = pid


class NodeRoster:
    """Partition id of each node, the nodes left out, and each client's device."""

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients
        self.pid_of_node: dict[int, int] = {}
        self.excluded: set[int] = set()  # nodes that claimed a partition id another node claimed
        self.client_devices: dict[int, str] = {}  # partition id -> device (the hello's answer)
        self.hello_failed: list[dict[str, Any]] = []  # the hello's refused or missing replies, shared ids

    def check(self, node: int, pid: int) -> None:
        """A node keeps the partition id it first gave, and no two nodes share one. Registers
        nothing (``register``)."""
        known = self.pid_of_node.get(node)
        if known is None:
            owner = next((n for n, p in self.pid_of_node.items() if p == pid), None)
            if owner is not None or node in self.excluded:
                raise DuplicatePartition(pid, owner)
        elif known != pid:
            raise ProtocolError(f"node changed partition id from {known} to {pid}")

    def refusal(self, rejected: Rejected, phase: str) -> dict[str, Any]:
        """How results.json records a refused reply (``failed_clients``): the node's partition as
        registered, else as the reply stated it."""
        pid = self.pid_of_node.get(rejected.node, rejected.stated)
        return {"node_id": rejected.node, "partition_id": pid, "phase": phase, "reason": rejected.reason}

    def register(self, node: int, pid: int) -> None:
        """A node whose reply was accepted holds ``pid`` from now on."""
        self.pid_of_node.setdefault(node, pid)

    def settle(self, claims: dict[int, list[int]]) -> dict[int, int]:
        """pid -> node for the partitions exactly one node claimed; every claimant of a shared
        partition id is left out (who is honest is unknowable, whatever order they answered in)."""
        node_of_pid: dict[int, int] = {}
        for pid, claimants in claims.items():
            if len(claimants) == 1:
                node_of_pid[pid] = claimants[0]
                continue
            why = f"partition id {pid} claimed by nodes {sorted(claimants)}: all of them left out"
            for node in claimants:
                self.pid_of_node.pop(node, None)
                self.hello_failed.append(self.refusal(Rejected(node, why, stated=pid), HELLO))
            log.warning(why)
            self.client_devices.pop(pid, None)
            self.excluded.update(claimants)
        if not node_of_pid:
            raise RuntimeError("no client answered the hello query")
        return dict(sorted(node_of_pid.items()))


def hello(
    grid: Grid, nodes: list[int], roster: NodeRoster, progress: RoundProgress, timeout: float
) -> dict[int, int]:
    """Ask every node for its partition id (and device) once; returns pid -> node id. Start-up
    (Ray workers, SuperNodes) may be slow: the hello has its own, longer ``timeout``. A node left
    out (a refused or missing reply, a shared partition id) is recorded in ``roster.hello_failed``."""
    messages = [Message(RecordDict(), dst_node_id=node, message_type=HELLO, group_id="0") for node in nodes]
    with progress.phase("starting clients", len(messages)) as phase:
        replies = collect_replies(grid, messages, timeout, phase)
    requests = PhaseRequests(messages)
    claims: dict[int, list[int]] = {}  # partition id -> nodes claiming it
    answered = {reply.metadata.src_node_id for reply in replies}
    late = f"no reply to the hello within {timeout:g} s"
    refused = [Rejected(node, late) for node in nodes if node not in answered]
    for reply in replies:
        result = decode_reply(reply, requests, roster, 0, upload=_device)
        if isinstance(result, Decoded):
            roster.client_devices[result.pid] = result.upload
            claims.setdefault(result.pid, []).append(result.node)
        elif result.claimed is not None:
            claims.setdefault(result.claimed, []).append(result.node)
        else:
            refused.append(result)
    for result in refused:  # a duplicate of an accepted hello is refused, its node is not left out
        roster.hello_failed.append(roster.refusal(result, HELLO))
        log.warning("hello reply of node %s refused: %s", result.node, result.reason)
    return roster.settle(claims)


def _device(reply: Message, server_round: int) -> str:
    """What a hello reply says the client computes on."""
    device = config_of(reply, INFO_KEY, "device info").get("device")
    if not isinstance(device, str) or not 0 < len(device) <= 100:
        raise ProtocolError("hello reply says nothing of its device")
    return device
