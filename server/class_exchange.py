"""The data-free exchange: per-class statistics of private data up, per-class knowledge down.

A client's upload is (C, D) per-class means, rows only for the classes it holds (the sparse
row format of selective uploads, fedkd/protocol.py), plus its class counts when the algorithm
weights by them (FedProto). The server checks each upload (``checked_upload``), fuses the round's
uploads per class and sends each client its knowledge twice: with ``train.distill`` (for the
private steps after the exchange) and with the next ``train.local`` (for the next round's local
steps). Clients keep nothing between rounds, so the server's latest knowledge is all that a
resumed run needs (saved with the round, like KT-pFL's server state).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Message, RecordDict

from fedkd.atomic import atomic_write
from fedkd.checkpoints import latest, tagged
from fedkd.config import ExperimentConfig
from fedkd.data.sources import dataset_spec
from fedkd.protocol import COUNTS, KNOWLEDGE_KEY, ROWS, SOFT, TARGET_KEY, ProtocolError, dense_soft
from server.exchange_base import Exchange, most_private_samples, target_record
from server.replies import arrays_of

KNOWLEDGE_CHECKPOINT = ("server-knowledge", ".npz")  # the latest per-class knowledge, per client


class ClassKnowledgeExchange(Exchange):
    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.classes = dataset_spec(cfg.data).num_classes
        self.width = self.fusion.knowledge_width(cfg)
        self.most = most_private_samples(cfg)
        self.latest: dict[int, np.ndarray] = {}  # pid -> its (C, D) knowledge after the last fusion

    def local_content(self, pid: int) -> dict[str, Any]:
        """The client's latest knowledge, for the regulariser of this round's local steps."""
        knowledge = self.latest.get(pid)
        return {} if knowledge is None else {TARGET_KEY: target_record(knowledge)}

    def distill_content(self, pid: int) -> dict[str, Any]:
        """A round without fusion: the private steps after it keep the latest knowledge, as the
        next round's local steps will."""
        return self.local_content(pid)

    def accept(self, reply: Message, server_round: int) -> tuple[np.ndarray, np.ndarray | None]:
        """((C, D) float64 with NaN rows for classes absent, (M,) counts of the rows present or None)."""
        c, d = self.classes, self.width
        spec = {SOFT: ({"float32"}, c * d), ROWS: ({"uint8"}, (c + 7) // 8)}
        if self.fusion.sends_counts():
            spec[COUNTS] = ({"float32"}, c)
        arrays = arrays_of(reply, KNOWLEDGE_KEY, "per-class knowledge", spec)
        if self.fusion.sends_counts() and COUNTS not in arrays:
            raise ProtocolError("per-class knowledge has no class counts")
        counts = np.asarray(arrays.pop(COUNTS), dtype=np.float64) if COUNTS in arrays else None
        values = dense_soft(arrays, c, d, None)
        self.fusion.checked_upload(values, counts, self.most)
        return values, counts

    def combine(
        self, accepted: dict[int, Any], replies: dict[int, Message], server_round: int
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        pids = sorted(accepted)
        knowledge = np.stack([accepted[p][0] for p in pids])  # (K', C, D)
        counts = None
        if self.fusion.sends_counts():
            counts = np.zeros((len(pids), self.classes))  # (K', C)
            for row, pid in enumerate(pids):
                counts[row, ~np.isnan(knowledge[row]).all(axis=1)] = accepted[pid][1]
        result = self.fusion.fuse_classes(knowledge, counts, self.cfg)
        fused = {
            pid: target
            for pid, target in zip(pids, result.targets, strict=True)
            if target is not None and not np.isnan(target).all()
        }
        for target in fused.values():  # the server checks its own output, all before any is kept
            self.fusion.check_values(target[~np.isnan(target).all(axis=1)])
        for pid in pids:
            self.latest.pop(pid, None)
        self.latest.update(fused)
        return {pid: RecordDict({TARGET_KEY: target_record(t)}) for pid, t in fused.items()}, result.weights

    def save(self, folder: str, server_round: int) -> None:
        """Every round, even with no knowledge held (then an empty file: a resume must not fall
        back to an older round's)."""
        path = tagged(folder, KNOWLEDGE_CHECKPOINT[0], server_round, KNOWLEDGE_CHECKPOINT[1])
        arrays = {f"client-{pid}": target for pid, target in sorted(self.latest.items())}
        atomic_write(path, lambda handle: np.savez(handle, **arrays), binary=True)

    def load(self, folder: str, recorded: int) -> None:
        path = latest(folder, *KNOWLEDGE_CHECKPOINT, recorded)
        if path is not None:
            with np.load(path) as saved:
                self.latest = {int(name.split("-")[1]): saved[name] for name in saved.files}
