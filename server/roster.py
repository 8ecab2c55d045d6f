"""Which node holds which partition, and whether a reply can be trusted to say so.

A node states its partition id in the hello (once, before round 1) and keeps it: a reply that
changes it, or a partition id that two nodes claim, is refused. Kept apart from the round loop
(server/strategy.py) because it is bookkeeping about nodes, not about rounds.
"""

from __future__ import annotations

import logging

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedkd.protocol import (
    HELLO,
    INFO_KEY,
    METRICS_KEY,
    ProtocolError,
    checked_metrics,
    error_summary,
    partition_id_of,
)
from server.progress import RoundProgress, collect_replies

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

    def identify(self, reply: Message, required: tuple[str, ...] = ()) -> tuple[int, dict[str, float]]:
        """The reply's partition id and checked metrics (fedkd/protocol.py); a node keeps the
        partition id it first gave, and no two nodes share one."""
        if reply.has_error():
            raise ProtocolError(f"client error: {error_summary(reply.error.reason)}")
        if METRICS_KEY not in reply.content:
            raise ProtocolError("reply has no metrics record")
        raw = reply.content[METRICS_KEY]
        pid = partition_id_of(raw, self.num_clients)
        metrics = checked_metrics(raw, required)
        node = reply.metadata.src_node_id
        known = self.pid_of_node.get(node)
        if known is None:
            owner = next((n for n, p in self.pid_of_node.items() if p == pid), None)
            if owner is not None or node in self.excluded:
                raise DuplicatePartition(pid, owner)
            self.pid_of_node[node] = pid
        elif known != pid:
            raise ProtocolError(f"node changed partition id from {known} to {pid}")
        return pid, metrics

    def settle(self, claims: dict[int, list[int]]) -> dict[int, int]:
        """pid -> node for the partitions exactly one node claimed; every claimant of a shared
        partition id is left out (who is honest is unknowable, whatever order they answered in)."""
        node_of_pid: dict[int, int] = {}
        for pid, claimants in claims.items():
            if len(claimants) == 1:
                node_of_pid[pid] = claimants[0]
                continue
            log.warning("partition id %d claimed by nodes %s: all of them left out", pid, sorted(claimants))
            for node in claimants:
                self.pid_of_node.pop(node, None)
            self.client_devices.pop(pid, None)
            self.excluded.update(claimants)
        if not node_of_pid:
            raise RuntimeError("no client answered the hello query")
        return dict(sorted(node_of_pid.items()))


def hello(
    grid: Grid, nodes: list[int], roster: NodeRoster, progress: RoundProgress, timeout: float
) -> dict[int, int]:
    """Ask every node for its partition id (and device) once; returns pid -> node id. Start-up
    (Ray workers, SuperNodes) may be slow: the hello has its own, longer ``timeout``."""
    messages = [Message(RecordDict(), dst_node_id=node, message_type=HELLO, group_id="0") for node in nodes]
    with progress.phase("starting clients", len(messages)) as phase:
        replies = collect_replies(grid, messages, timeout, phase)
    claims: dict[int, list[int]] = {}  # partition id -> nodes claiming it
    for reply in replies:
        node = reply.metadata.src_node_id
        try:
            if not reply.has_error() and (
                INFO_KEY not in reply.content or "device" not in reply.content[INFO_KEY]
            ):
                raise ProtocolError("hello reply says nothing of its device")
            pid, _ = roster.identify(reply)
            roster.client_devices[pid] = str(reply.content[INFO_KEY]["device"])
        except DuplicatePartition as why:
            pid = why.pid
        except ProtocolError as why:
            log.warning("node %s left out: %s", node, why)
            continue
        claims.setdefault(pid, []).append(node)
    return roster.settle(claims)
