"""KnowledgeFusionStrategy: the one round loop of fedkd, on Flower's Grid.

One round: ``train.local`` to every client -> validate each reply (drop failed or invalid
ones with a log line) -> combine the uploads (fusion, or weight averaging) -> ``train.distill``
with one personalised message per client -> collect local/global accuracy. The loop reads only
the algorithm's flags (``uploads``, ``guarded``, via server/exchanges.py) and never branches
on its name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from clients.client_app import CONFIG_KEY, METRICS_KEY
from fedkd.config import ExperimentConfig
from fedkd.fusion import FUSIONS
from fedkd.metrics import alma, mean_finite
from server.exchanges import ReplyRejected, exchange_for

log = logging.getLogger("flwr.fedkd")


def payload_bytes(messages: Iterable[Message]) -> int:
    """Serialized bytes of the arrays (soft predictions / targets) in these messages."""
    total = 0
    for msg in messages:
        if msg.has_content():
            for record in msg.content.array_records.values():
                total += sum(len(arr.data) for arr in record.values())
    return total


def wait_for_nodes(grid: Grid, count: int, timeout_s: float, poll_s: float = 0.1) -> list[int]:
    """Nodes register a moment after main() starts: poll until ``count`` are connected."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(nodes)} of num-clients={count} clients connected within {timeout_s:.0f} s; "
                "a `flwr run` simulation needs num-supernodes = num-clients (see docs/engines.md)"
            )
        time.sleep(poll_s)


@dataclass
class RoundOutcome:
    """Bookkeeping for one round while it runs."""

    node_of: dict[int, int] = field(default_factory=dict)  # partition id -> node id
    accepted: dict[int, Any] = field(default_factory=dict)  # pid -> validated upload
    replies: dict[int, Message] = field(default_factory=dict)  # pid -> its train.local reply
    rolled_back: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    compute_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0


class KnowledgeFusionStrategy:
    def __init__(
        self,
        cfg: ExperimentConfig,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        node_timeout_s: float = 120.0,
    ) -> None:
        self.cfg = cfg
        self.fusion = FUSIONS.get(cfg.fusion.algorithm)
        self.exchange = exchange_for(cfg)
        self.on_round = on_round
        self.node_timeout_s = node_timeout_s
        self.pid_of_node: dict[int, int] = {}

    # -- the loop -------------------------------------------------------------------------
    def run(self, grid: Grid) -> list[dict[str, Any]]:
        nodes = wait_for_nodes(grid, self.cfg.data.num_clients, self.node_timeout_s)
        history = []
        for server_round in range(1, self.cfg.run.rounds + 1):
            record = self.run_round(grid, nodes, server_round)
            history.append(record)
            if self.on_round is not None:
                self.on_round(record)
        return history

    def run_round(self, grid: Grid, nodes: list[int], server_round: int) -> dict[str, Any]:
        start = time.perf_counter()
        out = RoundOutcome()
        self._local_phase(grid, nodes, server_round, out)
        contents, weights = self._combine(out, server_round)
        local_acc, global_acc = self._distill_phase(grid, server_round, contents, out)
        if not local_acc:
            first = out.failed[0]["reason"] if out.failed else "no reply"
            raise RuntimeError(f"round {server_round}: no client completed the round; first problem: {first}")
        return {
            "round": server_round,
            **alma(local_acc),
            "global_acc": mean_finite(global_acc.values()),
            "client_acc": local_acc,
            "weights": weights.tolist(),
            "bytes_up": out.bytes_up,
            "bytes_down": out.bytes_down,
            "wall_s": time.perf_counter() - start,
            "compute_s": out.compute_s,
            "failed_clients": out.failed,
            "rolled_back": sorted(out.rolled_back),
        }

    # -- phases ---------------------------------------------------------------------------
    def _send(self, grid: Grid, messages: list[Message], out: RoundOutcome) -> list[Message]:
        out.bytes_down += payload_bytes(messages)
        replies = list(grid.send_and_receive(messages))
        out.bytes_up += payload_bytes(replies)
        return replies

    def _local_phase(self, grid: Grid, nodes: list[int], server_round: int, out: RoundOutcome) -> None:
        settings = ConfigRecord({"server-round": server_round, "upload": self.fusion.uploads})
        messages = [
            Message(
                RecordDict({CONFIG_KEY: settings}),
                dst_node_id=node,
                message_type="train.local",
                group_id=str(server_round),
            )
            for node in nodes
        ]
        for reply in self._send(grid, messages, out):
            node = reply.metadata.src_node_id
            try:
                pid = self._check_metrics(reply, out)
                out.node_of[pid] = node
                out.accepted[pid] = self.exchange.accept(reply)
                out.replies[pid] = reply
            except ReplyRejected as why:
                self._reject(out, node, "train.local", str(why), server_round)

    def _combine(self, out: RoundOutcome, server_round: int) -> tuple[dict[int, RecordDict], np.ndarray]:
        k = self.cfg.data.num_clients
        weights = np.zeros((k, k))
        pids = sorted(out.accepted)
        if self.fusion.uploads != "nothing" and len(pids) < self.cfg.run.min_replies:
            log.warning(
                "round %d: %d valid replies < min-replies=%d: no fusion this round",
                server_round,
                len(pids),
                self.cfg.run.min_replies,
            )
            return {}, weights
        try:
            contents, sub = self.exchange.combine(out.accepted, out.replies)
        except ReplyRejected as why:
            log.warning("round %d: no fusion this round: %s", server_round, why)
            return {}, weights
        weights[np.ix_(pids, pids)] = sub
        return contents, weights

    def _distill_phase(
        self, grid: Grid, server_round: int, contents: dict[int, RecordDict], out: RoundOutcome
    ) -> tuple[dict[int, float], dict[int, float]]:
        settings = ConfigRecord({"server-round": server_round})
        messages = []
        for pid, node in sorted(out.node_of.items()):
            content = RecordDict({CONFIG_KEY: settings, **contents.get(pid, {})})
            messages.append(
                Message(content, dst_node_id=node, message_type="train.distill", group_id=str(server_round))
            )
        local_acc: dict[int, float] = {}
        global_acc: dict[int, float] = {}
        for reply in self._send(grid, messages, out):
            try:
                pid = self._check_metrics(reply, out)
                metrics = reply.content[METRICS_KEY]
                local_acc[pid] = float(metrics["local-acc"])
                global_acc[pid] = float(metrics["global-acc"])
                if metrics.get("rolled-back", 0.0):
                    out.rolled_back.append(pid)
            except (ReplyRejected, KeyError) as why:
                self._reject(out, reply.metadata.src_node_id, "train.distill", str(why), server_round)
        # replies arrive in any order: sort so that sums (ALMA) are bit-identical across engines
        return dict(sorted(local_acc.items())), dict(sorted(global_acc.items()))

    # -- validation -----------------------------------------------------------------------
    def _check_metrics(self, reply: Message, out: RoundOutcome) -> int:
        """Return the reply's partition id after basic checks; add its compute time."""
        if reply.has_error():
            raise ReplyRejected(f"client error: {reply.error.reason.splitlines()[0][:200]}")
        if METRICS_KEY not in reply.content:
            raise ReplyRejected("reply has no metrics record")
        metrics = reply.content[METRICS_KEY]
        pid = int(metrics.get("partition-id", -1))
        if not 0 <= pid < self.cfg.data.num_clients:
            raise ReplyRejected(f"unknown partition id {pid}")
        known = self.pid_of_node.setdefault(reply.metadata.src_node_id, pid)
        if known != pid:
            raise ReplyRejected(f"node changed partition id from {known} to {pid}")
        out.compute_s += float(metrics.get("compute-seconds", 0.0))
        return pid

    def _reject(self, out: RoundOutcome, node: int, phase: str, reason: str, server_round: int) -> None:
        pid = self.pid_of_node.get(node)
        if phase == "train.local" and pid is not None:
            out.node_of.pop(pid, None)  # dropped for the whole round: no distil, no score
        out.failed.append({"node_id": node, "partition_id": pid, "phase": phase, "reason": reason})
        log.warning(
            "round %d: dropped %s reply of node %s (partition %s): %s", server_round, phase, node, pid, reason
        )
