"""What travels up after local training, how the server checks it, and what goes back down.

One class per kind of upload, chosen by the fusion algorithm's ``uploads`` flag:
``predictions`` (soft predictions -> the algorithm's ``fuse`` -> one target per client),
``weights`` (model weights -> Flower's own FedAvg aggregation -> the same weights for all) and
``nothing`` (local learning only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedkd.atomic import atomic_write
from fedkd.config import ExperimentConfig
from fedkd.data.sources import INPUT_SHAPES, NUM_CLASSES
from fedkd.fusion import FUSIONS
from fedkd.models import architecture_for, build_model
from fedkd.protocol import (
    KNOWLEDGE_KEY,
    METRICS_KEY,
    SOFT,
    TARGET_KEY,
    WEIGHTS_KEY,
    ProtocolError,
    checked_metrics,
    checked_soft,
    checked_weights,
)

SERVER_CHECKPOINT = "server-weights.pt"


def target_record(target: np.ndarray) -> ArrayRecord:
    """A personalised target goes down as float32: (N_t, C)."""
    return ArrayRecord({SOFT: Array(np.ascontiguousarray(target, dtype=np.float32))})


class Exchange:
    """Hooks the round loop calls on every exchange; only weight averaging keeps server state."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.fusion = FUSIONS.get(cfg.fusion.algorithm)

    def local_content(self, pid: int) -> dict[str, Any]:
        """Extra content of client ``pid``'s ``train.local`` message."""
        return {}

    def confirm(self, completed: list[int]) -> None:
        """The clients whose distil reply came back this round."""

    def save(self, folder: str) -> None:
        """Server-side state a resumed run needs, into ``folder``."""

    def load(self, folder: str) -> None:
        """Restore what ``save`` wrote."""


class PredictionExchange(Exchange):
    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        # the server holds no data: shapes come from the config and the dataset's metadata
        self.expected_shape = (cfg.data.transfer_size, NUM_CLASSES[cfg.data.dataset])

    def accept(self, reply: Message, server_round: int) -> np.ndarray:
        if KNOWLEDGE_KEY not in reply.content or SOFT not in reply.content[KNOWLEDGE_KEY]:
            raise ProtocolError("reply carries no soft predictions")
        preds = reply.content[KNOWLEDGE_KEY][SOFT].numpy().astype(np.float64)
        return checked_soft(preds, self._shape(server_round))

    def _shape(self, server_round: int) -> tuple[int, int]:
        rows = self.fusion.transfer_rows(self.cfg, server_round)
        return self.expected_shape if rows is None else (len(rows), self.expected_shape[1])

    def combine(
        self, accepted: dict[int, Any], replies: dict[int, Message]
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        """accepted: pid -> (N_t, C). Returns per-pid content for train.distill and a (K', K') matrix."""
        pids = sorted(accepted)
        stacked = np.stack([accepted[p] for p in pids])  # (K', N_t, C)
        result = self.fusion.fuse(stacked, self.cfg.fusion)
        for target in result.targets:  # the server checks its own output like any reply
            if target is not None:
                checked_soft(target, stacked.shape[1:])
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
        self, accepted: dict[int, Any], replies: dict[int, Message]
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        empty = np.zeros((len(accepted), 0, NUM_CLASSES[self.cfg.data.dataset]))  # (K', 0, C): no uploads
        result = self.fusion.fuse(empty, self.cfg.fusion)
        targets = [t for t in result.targets if t is not None]
        assert not targets, "an algorithm that uploads nothing cannot make targets"
        return {}, result.weights


def model_shapes(cfg: ExperimentConfig) -> dict[str, tuple[int, ...]]:
    """Layer names and shapes of the federation's one architecture (weight averaging needs one),
    from the config alone: the server holds no data."""
    arch = architecture_for(cfg.model.models, 0, cfg.data.num_clients)
    dataset = cfg.data.dataset
    model = build_model(arch, INPUT_SHAPES[dataset], NUM_CLASSES[dataset], cfg.run.seed)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


class WeightExchange(Exchange):
    """Weight averaging with Flower's FedAvg strategy (weighted by num-examples)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.strategy = FedAvg()
        self.latest: ArrayRecord | None = None  # the last averaged model
        self.shapes = model_shapes(cfg)  # what every upload must look like
        self.pending: set[int] = set()  # sent the latest average in this round's distil phase
        self.holders: set[int] = set()  # known to hold the latest average

    def local_content(self, pid: int) -> dict[str, Any]:
        """A client that does not hold the current global model (it sat rounds out, or its reply
        was dropped) gets it with ``train.local``; the others already adopted it."""
        if self.latest is None or pid in self.holders:
            return {}
        return {WEIGHTS_KEY: self.latest}

    def confirm(self, completed: list[int]) -> None:
        """The clients whose distil reply came back hold the latest average."""
        self.holders = self.pending & set(completed)

    def save(self, folder: str) -> None:
        """The latest average and who holds it, atomically (a resumed run continues from it)."""
        if self.latest is not None:
            state = {"latest": self.latest.to_torch_state_dict(), "holders": sorted(self.holders)}
            atomic_write(
                Path(folder) / SERVER_CHECKPOINT, lambda handle: torch.save(state, handle), binary=True
            )

    def load(self, folder: str) -> None:
        path = Path(folder) / SERVER_CHECKPOINT
        if path.exists():
            state = torch.load(path, weights_only=True)
            self.latest, self.holders = ArrayRecord(state["latest"]), set(state["holders"])

    def accept(self, reply: Message, server_round: int) -> tuple[ArrayRecord, float]:
        if WEIGHTS_KEY not in reply.content:
            raise ProtocolError("reply carries no model weights")
        record = reply.content[WEIGHTS_KEY]
        checked_weights({name: arr.numpy() for name, arr in record.items()}, self.shapes)
        size = checked_metrics(reply.content[METRICS_KEY], ("num-examples",))["num-examples"]
        if size <= 0:
            raise ProtocolError("reply reports num-examples = 0: nothing to weight its model by")
        return record, size

    def combine(
        self, accepted: dict[int, Any], replies: dict[int, Message]
    ) -> tuple[dict[int, RecordDict], np.ndarray]:
        pids = sorted(accepted)
        # Flower's FedAvg sees clean replies: the checked weights and their example count only
        clean = [
            Message(
                RecordDict(
                    {
                        WEIGHTS_KEY: accepted[p][0],
                        METRICS_KEY: MetricRecord({"num-examples": accepted[p][1]}),
                    }
                ),
                reply_to=replies[p],
            )
            for p in pids
        ]
        try:
            averaged, _ = self.strategy.aggregate_train(server_round=0, replies=clean)
        except Exception as exc:  # noqa: BLE001 - any refusal by Flower drops this round's fusion
            raise ProtocolError(
                f"Flower's FedAvg could not aggregate the replies ({type(exc).__name__})"
            ) from None
        if averaged is None:
            raise ProtocolError("Flower's FedAvg could not aggregate the replies (inconsistent weights)")
        sizes = np.array([accepted[p][1] for p in pids])
        weights = np.tile(sizes / sizes.sum(), (len(pids), 1))  # everyone gets the same average
        self.latest, self.pending = averaged, set(pids)
        return {pid: RecordDict({WEIGHTS_KEY: averaged}) for pid in pids}, weights


EXCHANGES = {"predictions": PredictionExchange, "weights": WeightExchange, "nothing": NoExchange}


def exchange_for(cfg: ExperimentConfig):
    return EXCHANGES[FUSIONS.get(cfg.fusion.algorithm).uploads](cfg)
