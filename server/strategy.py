"""KnowledgeFusionStrategy: the one round loop of fedkd (the round driver), on Flower's Grid.

One round: ``train.local`` to every client -> decode each reply (server/replies.py; drop bad
ones, recorded) -> combine the uploads (fusion, or weight averaging) -> ``train.distill`` with
one personalised message per client -> collect local/global accuracy. The loop reads only the
algorithm's flags (``uploads``, ``guarded``, via server/exchanges.py), never its name. Who is
who: server/roster.py; what a round collects: server/round_state.py; progress: server/progress.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedkd.checkpoints import switch
from fedkd.config import ExperimentConfig
from fedkd.metric_specs import EVALUATE, required_keys, with_recorded_metrics
from fedkd.metrics import mean_self_weight, positions
from fedkd.privacy import run_ledger
from fedkd.protocol import CONFIG_KEY, TARGET_KEY, TRAIN_DISTILL, TRAIN_LOCAL, ProtocolError, checked_metrics
from fedkd.run_plan import run_plan
from fedkd.seeding import numpy_rng
from server.client_call import raise_folder_errors
from server.exchanges import exchange_for
from server.nodes import wait_for_nodes
from server.progress import RoundProgress, collect_replies
from server.replies import PhaseRequests, Rejected, decode_reply, metrics_of
from server.roster import NodeRoster, hello
from server.round_state import Evaluation, RoundOutcome, payload_bytes

log = logging.getLogger("flwr.fedkd")


class KnowledgeFusionStrategy:
    """The round driver (not a Flower Strategy): hello, then rounds until the last or a stop."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        node_timeout_s: float = 120.0,
        checkpoint_dir: str = "",
        start_round: int = 1,
        progress: RoundProgress | None = None,
    ) -> None:
        self.cfg = cfg
        self.progress = progress if progress is not None else RoundProgress()  # clients done per phase
        self.fusion = run_plan(cfg).algorithm
        self.exchange = exchange_for(cfg)
        self.on_round = on_round
        self.node_timeout_s = node_timeout_s
        self.roster = NodeRoster(cfg.data.num_clients)
        self.ledger = run_ledger(cfg)
        self.stopped: str | None = None  # why the run ended early, if it did
        # resumable runs: clients checkpoint their end-of-round model there; a resumed run starts
        # at start_round and tells clients to pick up their checkpoints
        self.checkpoint_dir, self.start_round = checkpoint_dir, start_round
        if checkpoint_dir and start_round > 1:
            self.exchange.load(checkpoint_dir, start_round - 1)

    @property
    def pid_of_node(self) -> dict[int, int]:
        return self.roster.pid_of_node

    @property
    def client_devices(self) -> dict[int, str]:
        return self.roster.client_devices

    # -- the loop -------------------------------------------------------------------------
    def run(self, grid: Grid, nodes: list[int] | None = None) -> list[dict[str, Any]]:
        """All rounds on ``grid``; ``nodes``: the node ids already waited for (else wait here)."""
        if nodes is None:
            nodes = wait_for_nodes(grid, self.cfg.data.num_clients, self.cfg.run.min_nodes_wait)
        node_of_pid = self.hello(grid, nodes)
        history = []
        for server_round in range(self.start_round, self.cfg.run.rounds + 1):
            asked = self.asked_nodes(node_of_pid, server_round)
            if self.ledger is not None and self.ledger.would_exceed([self.pid_of_node[n] for n in asked]):
                self.stopped = (
                    f"stopped before round {server_round}: a client would exceed "
                    f"max-epsilon={self.cfg.privacy.max_epsilon:g} ({self.ledger.method})"
                )
                log.warning(self.stopped)
                break
            record = self.run_round(grid, asked, server_round)
            if self.checkpoint_dir:  # tagged with the round: not current until it is recorded
                self.exchange.save(self.checkpoint_dir, server_round)
            history.append(record)
            if self.on_round is not None:
                self.on_round(record)
            if self.checkpoint_dir:  # recorded: the files of this round are now the current ones
                switch(self.checkpoint_dir, server_round)
        return history

    def hello(self, grid: Grid, nodes: list[int]) -> dict[int, int]:
        """Ask every node for its partition id (and device) once; returns pid -> node id."""
        return hello(grid, nodes, self.roster, self.progress, self.node_timeout_s)

    def asked_nodes(self, node_of_pid: dict[int, int], server_round: int) -> list[int]:
        """The node ids asked to train this round: all, or a seeded sample of ``fraction`` of
        them (drawn by partition id, so the same clients are drawn on every engine). The round
        record's ``participants`` are partition ids: node ids never leave the round loop."""
        pids = sorted(node_of_pid)
        k = min(len(pids), max(self.cfg.run.min_replies, math.ceil(self.cfg.run.fraction * len(pids))))
        if k < len(pids):
            pids = sorted(
                numpy_rng(self.cfg.run.seed, "participation", server_round).choice(pids, k, replace=False)
            )
        return [node_of_pid[int(p)] for p in pids]

    def _account(self, released: list[int]) -> dict[int, float] | None:
        """Cumulative epsilon per client after this round's releases (None: no noise)."""
        if self.ledger is None:
            return None
        for pid in released:
            self.ledger.record_release(pid)
        return {pid: self.ledger.epsilon_after(pid) for pid in sorted(self.ledger.releases)}

    def _checkpointing(self) -> dict[str, Any]:
        if not self.checkpoint_dir:
            return {}
        return {"checkpoint-dir": self.checkpoint_dir, "resume-round": self.start_round - 1}

    def _timeout(self) -> float | None:
        return self.cfg.run.reply_timeout or None

    def evaluates(self, server_round: int) -> bool:
        """Evaluate every ``eval-every`` rounds and always after the last one."""
        return server_round % self.cfg.run.eval_every == 0 or server_round == self.cfg.run.rounds

    def run_round(self, grid: Grid, nodes: list[int], server_round: int) -> dict[str, Any]:
        start = time.perf_counter()
        out = RoundOutcome()
        self._local_phase(grid, nodes, server_round, out)
        participants = sorted(set(out.asked) | set(out.accepted))  # asked (and any that answered)
        contents, weights = self._combine(out, participants, server_round)
        evaluation = self._distill_phase(grid, server_round, contents, out)
        self.exchange.confirm(evaluation.completed)
        if not evaluation.completed:
            first = out.failed[0]["reason"] if out.failed else "no reply"
            raise RuntimeError(f"round {server_round}: no client completed the round; first problem: {first}")
        fused = sorted(p for p, content in contents.items() if TARGET_KEY in content)
        return with_recorded_metrics(
            out.completed_records(evaluation.completed),
            {
                "round": server_round,
                "evaluated": evaluation.evaluated,
                **evaluation.scores(),
                "private_samples": dict(sorted(out.private_samples.items())),
                "transfer_samples": dict(sorted(out.transfer_samples.items())),
                "private_steps": {pid: int(v) for pid, v in sorted(out.private_steps.items())},
                "transfer_steps": {pid: int(v) for pid, v in sorted(out.transfer_steps.items())},
                "pretrain_steps": {pid: int(v) for pid, v in sorted(out.pretrain_steps.items()) if v},
                "server_steps": out.server_steps,
                "self_weight": mean_self_weight(weights, positions(fused, participants)),
                "weights": weights.tolist(),  # over the round's participants only (rows and columns)
                "bytes_up": out.bytes_up,
                "bytes_down": out.bytes_down,
                "wall_s": time.perf_counter() - start,
                "compute_s": out.compute_s,
                "server_compute_s": out.server_compute_s,
                "failed_clients": out.failed,
                "rolled_back": sorted(out.rolled_back),
                "participants": participants,
                "epsilon": self._account(out.asked),
            },
        )

    # -- phases ---------------------------------------------------------------------------
    def _send(self, grid: Grid, messages: list[Message], out: RoundOutcome, label: str) -> list[Message]:
        """Send and collect (``label``: the phase, for progress); a node that does not answer
        within reply-timeout is recorded."""
        out.bytes_down += payload_bytes(messages)
        with self.progress.phase(label, len(messages)) as phase:
            replies = collect_replies(grid, messages, self._timeout(), phase)
        out.bytes_up += payload_bytes(replies)
        if self.checkpoint_dir:  # only fedkd's simulations write client checkpoints
            raise_folder_errors(replies)
        answered = {r.metadata.src_node_id for r in replies}
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node not in answered:
                phase = msg.metadata.message_type
                why = f"no reply within reply-timeout={self.cfg.run.reply_timeout:g} s"
                self._reject(out, Rejected(node, why), phase, int(msg.metadata.group_id))
        return replies

    def _local_phase(self, grid: Grid, nodes: list[int], server_round: int, out: RoundOutcome) -> None:
        settings = ConfigRecord(
            {"server-round": server_round, "upload": self.fusion.uploads.value, **self._checkpointing()}
        )
        out.asked = [self.pid_of_node[n] for n in nodes if n in self.pid_of_node]
        messages = [
            Message(
                RecordDict(
                    {CONFIG_KEY: settings, **self.exchange.local_content(self.pid_of_node.get(node, -1))}
                ),
                dst_node_id=node,
                message_type=TRAIN_LOCAL,
                group_id=str(server_round),
            )
            for node in nodes
        ]
        label = f"round {server_round}/{self.cfg.run.rounds} local training"
        requests = PhaseRequests(messages)
        for reply in self._send(grid, messages, out, label):
            result = decode_reply(reply, requests, self.roster, server_round, upload=self.exchange.accept)
            if result.pid is not None:  # readable claims count even when the upload is refused
                out.tally(result.pid, result.metrics)
            if isinstance(result, Rejected):
                self._reject(out, result, TRAIN_LOCAL, server_round)
                continue
            out.node_of[result.pid] = result.node
            out.accepted[result.pid] = result.upload
            out.replies[result.pid] = reply
            out.record(result.pid, result.metrics)

    def _combine(self, out: RoundOutcome, participants: list[int], rnd: int) -> tuple[dict, np.ndarray]:
        """Targets per client, and the weights over ``participants`` (row = student): 100 x 100
        for 100 asked of 10,000 registered clients."""
        weights = np.zeros((len(participants), len(participants)))
        pids = sorted(out.accepted)
        if self.fusion.uploads.anything and len(pids) < self.cfg.run.min_replies:
            few = f"{len(pids)} valid replies < min-replies={self.cfg.run.min_replies}"
            log.warning("round %d: %s: no fusion this round", rnd, few)
            return {}, weights
        start = time.perf_counter()
        try:
            contents, sub = self.exchange.combine(out.accepted, out.replies, rnd)
        except ProtocolError as why:
            log.warning("round %d: no fusion this round: %s", rnd, why)
            return {}, weights
        finally:
            out.server_compute_s = time.perf_counter() - start
            out.server_steps = self.exchange.server_steps
        at = positions(pids, participants)
        weights[np.ix_(at, at)] = sub
        return contents, weights

    def _distill_phase(
        self, grid: Grid, server_round: int, contents: dict[int, RecordDict], out: RoundOutcome
    ) -> Evaluation:
        evaluation = Evaluation(evaluated=self.evaluates(server_round))
        settings = ConfigRecord(
            {"server-round": server_round, "evaluate": evaluation.evaluated, **self._checkpointing()}
        )
        messages = []
        for pid, node in sorted(out.node_of.items()):
            extra = contents.get(pid) or self.exchange.distill_content(pid)  # no fusion: what it holds
            content = RecordDict({CONFIG_KEY: settings, **extra})
            messages.append(
                Message(content, dst_node_id=node, message_type=TRAIN_DISTILL, group_id=str(server_round))
            )
        label = f"round {server_round}/{self.cfg.run.rounds} " + (
            "distillation + evaluation" if evaluation.evaluated else "distillation"
        )
        requests = PhaseRequests(messages)
        required = required_keys(EVALUATE) if evaluation.evaluated else ()
        for reply in self._send(grid, messages, out, label):
            result = decode_reply(reply, requests, self.roster, server_round, required, self._scores)
            if result.pid is not None:  # readable claims count even when the upload is refused
                out.tally(result.pid, result.metrics)
            if isinstance(result, Rejected):
                self._reject(out, result, TRAIN_DISTILL, server_round)
                continue
            if evaluation.evaluated:
                evaluation.add(result.pid, result.metrics)
            out.record(result.pid, result.metrics)
            evaluation.completed.append(result.pid)
            if result.metrics.get("rolled-back", 0.0):
                out.rolled_back.append(result.pid)
        # replies arrive in any order: sort so that sums (ALMA) are bit-identical across engines
        evaluation.sort()
        return evaluation

    # -- validation -----------------------------------------------------------------------
    @staticmethod
    def _scores(reply: Message, server_round: int) -> None:
        """A distil reply that reports scores must have scored something."""
        if checked_metrics(metrics_of(reply)).get("local-test-size", 1.0) < 1:
            raise ProtocolError("reply reports an empty local test split")

    def _reject(self, out: RoundOutcome, rejected: Rejected, phase: str, server_round: int) -> None:
        """Record a refused reply (a node whose reply was accepted keeps it: a duplicate or a
        replay never undoes the reply it copies)."""
        out.failed.append(entry := self.roster.refusal(rejected, phase))
        what = f"{phase} reply of node {rejected.node} (partition {entry['partition_id']})"
        log.warning("round %d: dropped %s: %s", server_round, what, rejected.reason)
