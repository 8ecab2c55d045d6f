"""What travels up after local training, how the server checks it, and what goes back down.

One class per kind of upload, chosen by the fusion algorithm's ``uploads`` flag:
``predictions`` (soft predictions, possibly compressed or sparse -> the algorithm's
``fuse_round`` -> one target per client), ``weights`` (model weights -> Flower's own FedAvg
aggregation, per architecture -> each client its architecture's average),
``weights+predictions`` (the same, then the algorithm's ``server_distill`` refines each average
with the clients' predictions: FedDF), ``nothing`` (local learning only) and the data-free
``class-predictions`` / ``class-prototypes`` (per-class statistics: server/class_exchange.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedkd.atomic import atomic_write
from fedkd.checkpoints import latest, tagged
from fedkd.compression import ARRAY_DTYPES
from fedkd.config import ExperimentConfig
from fedkd.data.sources import dataset_spec
from fedkd.fusion_cards import Uploads
from fedkd.models import architecture_for, model_layers
from fedkd.protocol import (
    KNOWLEDGE_KEY,
    METRICS_KEY,
    ROWS,
    TARGET_KEY,
    WEIGHTS_KEY,
    ProtocolError,
    checked_metrics,
    checked_sparse_soft,
    checked_weights,
    dense_soft,
    partition_id_of,
)
from fedkd.run_plan import run_plan
from server.class_exchange import ClassKnowledgeExchange
from server.exchange_base import Exchange, most_private_samples, target_record
from server.replies import arrays_of, metrics_of

SERVER_CHECKPOINT = ("server-weights", ".pt")  # tagged with the round (fedkd/checkpoints.py)
STATE_CHECKPOINT = ("server-state", ".npz")  # an algorithm's server state (KT-pFL's coefficient matrix)


class PredictionExchange(Exchange):
    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        # the server holds no data: shapes come from the config and the dataset's metadata
        self.expected_shape = (cfg.data.transfer_size, dataset_spec(cfg.data).num_classes)
        self.state = self.fusion.start(cfg)  # carried from round to round (KT-pFL's C)

    def accept(self, reply: Message, server_round: int) -> np.ndarray:
        """The decoded upload: (N_t, C) float64, all-NaN rows where a sparse upload holds none."""
        rows, classes = self._shape(server_round)
        spec = {name: ({dtype}, rows * classes) for name, dtype in ARRAY_DTYPES.items()}
        arrays = arrays_of(reply, KNOWLEDGE_KEY, "soft predictions", spec)
        if ROWS in arrays and not self.fusion.sparse:
            raise ProtocolError(f"reply withholds rows, but {self.cfg.fusion.algorithm} needs every row")
        return checked_sparse_soft(dense_soft(arrays, rows, classes, self.cfg.fusion), (rows, classes))

    def save(self, folder: str, server_round: int) -> None:
        if self.state:
            path = tagged(folder, STATE_CHECKPOINT[0], server_round, STATE_CHECKPOINT[1])
            atomic_write(path, lambda handle: np.savez(handle, **self.state), binary=True)

    def load(self, folder: str, recorded: int) -> None:
        path = latest(folder, *STATE_CHECKPOINT, recorded)
        if path is not None:
            with np.load(path) as saved:
                self.state = {name: saved[name] for name in saved.files}

    def _shape(self, server_round: int) -> tuple[int, int]:
        rows = self.fusion.transfer_rows(self.cfg, server_round)
        return self.expected_shape if rows is None else (len(rows), self.expected_shape[1])

    def combine(
        self, accepted: dict[int, Any], replies: dict[int, Message], server_round: int
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        """accepted: pid -> (N_t, C). Returns per-pid content for train.distill and a (K', K') matrix."""
        pids = sorted(accepted)
        stacked = np.stack([accepted[p] for p in pids])  # (K', N_t, C)
        result = self.fusion.fuse_round(stacked, pids, self.state, self.cfg)
        for target in result.targets:  # the server checks its own output like any reply
            if target is not None:
                checked_sparse_soft(target, stacked.shape[1:])
        contents = {
            pid: RecordDict({TARGET_KEY: target_record(target)})
            for pid, target in zip(pids, result.targets, strict=True)
            if target is not None
        }
        return contents, result.weights


class NoExchange(Exchange):
    """Nothing is uploaded; the algorithm still decides the (identity) weights and no targets."""

    def accept(self, reply: Message, server_round: int) -> None:
        return None

    def combine(
        self, accepted: dict[int, Any], replies: dict[int, Message], server_round: int
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        classes = dataset_spec(self.cfg.data).num_classes
        empty = np.zeros((len(accepted), 0, classes))  # (K', 0, C): no uploads
        result = self.fusion.fuse(empty, self.cfg.fusion)
        targets = [t for t in result.targets if t is not None]
        assert not targets, "an algorithm that uploads nothing cannot make targets"
        return {}, result.weights


def model_shapes(cfg: ExperimentConfig, arch: str | None = None) -> dict[str, tuple[int, ...]]:
    """Layer names and shapes of one architecture (default: client 0's), from the config alone."""
    arch = arch or architecture_for(cfg.model.models, 0, cfg.data.num_clients)
    return {
        name: shape for name, (shape, _) in model_layers(arch, cfg.data, cfg.model.projection_width).items()
    }


class WeightExchange(Exchange):
    """Weight averaging with Flower's FedAvg strategy (weighted by num-examples), one average per
    architecture: a client gets the average of the clients that run its model."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.strategy = FedAvg()
        self.latest: dict[str, ArrayRecord] = {}  # architecture -> its last averaged model
        archs = {self.arch(pid) for pid in range(cfg.data.num_clients)}
        self.layers = {
            arch: model_layers(arch, cfg.data, cfg.model.projection_width) for arch in archs
        }  # what uploads hold
        self.limits = {"num-examples": (1.0, most_private_samples(cfg))}  # no client holds more
        self.pending: set[int] = set()  # sent the latest average in this round's distil phase
        self.holders: set[int] = set()  # known to hold the latest average of their architecture

    def arch(self, pid: int) -> str:
        return architecture_for(self.cfg.model.models, pid, self.cfg.data.num_clients)

    def local_content(self, pid: int) -> dict[str, Any]:
        """A client that does not hold its architecture's current model (it sat rounds out, or its
        reply was dropped) gets it with ``train.local``; the others already adopted it."""
        latest = self.latest.get(self.arch(pid)) if pid >= 0 else None
        if latest is None or pid in self.holders:
            return {}
        return {WEIGHTS_KEY: latest}

    def confirm(self, completed: list[int]) -> None:
        """The clients whose distil reply came back hold the latest average."""
        self.holders = self.pending & set(completed)

    def save(self, folder: str, server_round: int) -> None:
        """The latest averages and who holds them, atomically (a resumed run continues from them)."""
        if self.latest:
            state = {
                "latest": {arch: record.to_torch_state_dict() for arch, record in self.latest.items()},
                "holders": sorted(self.holders),
            }
            path = tagged(folder, SERVER_CHECKPOINT[0], server_round, SERVER_CHECKPOINT[1])
            atomic_write(path, lambda handle: torch.save(state, handle), binary=True)

    def load(self, folder: str, recorded: int) -> None:
        path = latest(folder, *SERVER_CHECKPOINT, recorded)
        if path is not None:
            state = torch.load(path, weights_only=True)
            self.latest = {arch: ArrayRecord(saved) for arch, saved in state["latest"].items()}
            self.holders = set(state["holders"])

    def accept(self, reply: Message, server_round: int) -> tuple[ArrayRecord, float]:
        """The checked weights (exactly the federation's layers, shapes and dtypes, finite) and
        the client's num-examples, which weights them: at most what the data allows, so that
        the sum over clients cannot overflow and no claim outweighs the data."""
        pid = partition_id_of(metrics_of(reply), self.cfg.data.num_clients)  # checked already
        layers = self.layers[self.arch(pid)]
        spec = {name: ({dtype}, shape) for name, (shape, dtype) in layers.items()}
        arrays = arrays_of(reply, WEIGHTS_KEY, "model weights", spec)
        checked_weights(arrays, {name: shape for name, (shape, _) in layers.items()})
        size = checked_metrics(metrics_of(reply), ("num-examples",), self.limits)["num-examples"]
        return ArrayRecord({name: Array(np.array(arr)) for name, arr in arrays.items()}), size

    def _average(self, pids: list[int], accepted: dict[int, Any], replies: dict[int, Message]) -> ArrayRecord:
        # Flower's FedAvg sees clean replies: the checked weights and their example count only
        sizes = {p: MetricRecord({"num-examples": accepted[p][1]}) for p in pids}
        records = [RecordDict({WEIGHTS_KEY: accepted[p][0], METRICS_KEY: sizes[p]}) for p in pids]
        clean = [Message(record, reply_to=replies[p]) for record, p in zip(records, pids, strict=True)]
        try:
            averaged, _ = self.strategy.aggregate_train(server_round=0, replies=clean)
        except Exception as exc:  # noqa: BLE001 - any refusal by Flower drops this round's fusion
            raise ProtocolError(
                f"Flower's FedAvg could not aggregate the replies ({type(exc).__name__})"
            ) from None
        if averaged is None:
            raise ProtocolError("Flower's FedAvg could not aggregate the replies (inconsistent weights)")
        return averaged

    def refine(
        self,
        averaged: dict[str, ArrayRecord],
        weights: np.ndarray,
        accepted: dict[int, Any],
        server_round: int,
    ) -> tuple[dict[str, ArrayRecord], np.ndarray]:
        """A server-side step after averaging (none for plain weight averaging)."""
        return averaged, weights

    def combine(
        self, accepted: dict[int, Any], replies: dict[int, Message], server_round: int
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        self.server_steps = 0
        pids = sorted(accepted)
        groups: dict[str, list[int]] = defaultdict(list)  # architecture -> its clients this round
        for pid in pids:
            groups[self.arch(pid)].append(pid)
        averaged = {
            arch: self._average(members, accepted, replies) for arch, members in sorted(groups.items())
        }
        sizes = np.array([accepted[p][1] for p in pids])
        same = np.array([[self.arch(a) == self.arch(b) for b in pids] for a in pids])  # (K', K')
        weights = same * sizes[None, :]
        weights = weights / weights.sum(axis=1, keepdims=True)  # row k: its architecture's average
        models, weights = self.refine(averaged, weights, accepted, server_round)
        self.latest.update(models)
        self.pending = set(pids)
        return {pid: RecordDict({WEIGHTS_KEY: models[self.arch(pid)]}) for pid in pids}, weights


class DistilledWeightExchange(WeightExchange):
    """Weights and predictions up; per-architecture averages refined by the algorithm's
    ``server_distill`` towards the ensemble of every client's predictions (FedDF)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.predictions = PredictionExchange(cfg)  # decodes and checks the prediction uploads

    def accept(self, reply: Message, server_round: int) -> tuple[ArrayRecord, float, np.ndarray]:
        record, size = super().accept(reply, server_round)
        return record, size, self.predictions.accept(reply, server_round)

    def refine(
        self,
        averaged: dict[str, ArrayRecord],
        weights: np.ndarray,
        accepted: dict[int, Any],
        server_round: int,
    ) -> tuple[dict[str, ArrayRecord], np.ndarray]:
        """Row k of the recorded weights becomes the ensemble teacher: every client alike."""
        preds = np.stack([accepted[p][2] for p in sorted(accepted)])  # (K', N_t, C)
        states = {arch: record.to_torch_state_dict() for arch, record in averaged.items()}
        refined = self.fusion.server_distill(states, preds, self.cfg, server_round)
        if refined is None:
            return averaged, weights
        self.server_steps = self.fusion.server_steps(self.cfg) * len(refined)  # per architecture
        k = len(accepted)
        return {arch: ArrayRecord(state) for arch, state in refined.items()}, np.full((k, k), 1.0 / k)


EXCHANGES = {  # one per upload kind (a test holds every kind to one)
    Uploads.PREDICTIONS: PredictionExchange,
    Uploads.WEIGHTS: WeightExchange,
    Uploads.WEIGHTS_AND_PREDICTIONS: DistilledWeightExchange,
    Uploads.NOTHING: NoExchange,
    Uploads.CLASS_PREDICTIONS: ClassKnowledgeExchange,
    Uploads.CLASS_PROTOTYPES: ClassKnowledgeExchange,
}


def exchange_for(cfg: ExperimentConfig):
    return EXCHANGES[run_plan(cfg).algorithm.uploads](cfg)
