"""The contract between the round loop and a fusion algorithm.

The round loop never branches on an algorithm's name. It reads flags and calls hooks: ``uploads``
(what clients send after local training: "predictions", "weights", "weights+predictions" or
"nothing"), ``guarded`` (clients keep a validation slice and undo a distillation that hurts it),
``sparse`` (clients may withhold rows: ``upload_mask`` picks them, client-side),
``start``/``fuse_round`` (server state carried from round to round, e.g. KT-pFL's coefficient
matrix), ``server_distill`` (weight uploads: a server-side step after averaging per
architecture, e.g. FedDF) and ``pretrain_epochs`` (supervised epochs on the labelled transfer set
before a client's first round, e.g. FedMD's transfer learning). For prediction uploads it sends
each client the target ``fuse_round`` made for it (None: that client learns locally this round;
NaN rows: no target on those rows). ``paper`` and ``personalised`` describe the algorithm for
``fedkd algorithms``. Data-free algorithms (uploads ``class-predictions`` / ``class-prototypes``)
upload per-class statistics of private data instead (``class_knowledge``), fuse them per class
(``fuse_classes``) and use what comes back as a regulariser of every private step
(``private_loss``): fedkd/fusion/class_knowledge.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedkd.config import ExperimentConfig, FusionConfig, TrainConfig
from fedkd.data.sources import dataset_spec
from fedkd.fusion_cards import Card, Uploads
from fedkd.registry import Registry

if TYPE_CHECKING:
    import torch

    from fedkd.data.federation import ClientData
    from fedkd.training import ModelLoss

ServerState = dict[str, np.ndarray]  # named arrays an algorithm keeps on the server between rounds


@dataclass(frozen=True)
class FusionResult:
    # K entries: (N, C) target on the simplex (NaN rows: none), or None; data-free algorithms:
    # (C, D) per-class knowledge (NaN rows: none)
    targets: list[np.ndarray | None]
    weights: np.ndarray  # (K, K): row k = how much client k learns from each client j


class FusionAlgorithm:
    card: Card = Card()  # uploads, sparse, personalised, paper, settings: fedkd/fusion_cards.py
    guarded: bool = False
    needs_one_architecture: bool = False  # every client must run the same model
    # Temperature at which clients upload soft predictions and distil; None: `temperature`.
    # (DS-FL's paper works on plain T = 1 probabilities; see docs/design.md, fidelity.)
    fixed_temperature: float | None = None

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        """preds: (K, N, C) soft predictions of the K clients that replied, in a fixed order."""
        raise NotImplementedError

    def start(self, cfg: ExperimentConfig) -> ServerState:
        """Server state at the start of a run (saved with the server's checkpoint)."""
        return {}

    def fuse_round(
        self, preds: np.ndarray, pids: list[int], state: ServerState, cfg: ExperimentConfig
    ) -> FusionResult:
        """One round's fusion; ``pids``: the partition ids of the rows of ``preds``; ``state`` may be
        updated in place. Stateless algorithms just ``fuse``."""
        return self.fuse(preds, cfg.fusion)

    def upload_mask(
        self, cfg: ExperimentConfig, pid: int, data: ClientData, rows: np.ndarray | None
    ) -> np.ndarray | None:
        """Client side: (N,) bool, the transfer rows (of ``rows``, None: all) this client uploads
        predictions for; None: every row."""
        return None

    def server_distill(
        self,
        models: dict[str, dict[str, torch.Tensor]],
        preds: np.ndarray,
        cfg: ExperimentConfig,
        server_round: int,
    ) -> dict[str, dict[str, torch.Tensor]] | None:
        """Weight uploads with predictions: refine each architecture's averaged model (arch ->
        state dict) with the clients' (K, N, C) predictions; None: keep the averages."""
        return None

    def pretrain_epochs(self, cfg: ExperimentConfig) -> int:
        """Supervised epochs on the labelled transfer set before a client's first local training:
        ``pretrain-epochs`` (offered to every algorithm alike) plus any transfer-learning phase
        the algorithm has of its own (FedMD). Compute before round 1, for the budget to count."""
        return cfg.train.pretrain_epochs

    def server_steps(self, cfg: ExperimentConfig) -> int:
        """Server-side optimiser steps per architecture and round (reported apart from the clients')."""
        return 0

    @property
    def uploads(self) -> Uploads:
        return self.card.uploads

    @property
    def sparse(self) -> bool:
        return self.card.sparse

    @property
    def personalised(self) -> bool:
        return self.card.personalised

    @property
    def paper(self) -> str:
        return self.card.paper

    @property
    def keys(self) -> tuple[str, ...]:
        """The config keys only this algorithm reads (its card's settings dataclasses' fields)."""
        return self.card.keys

    @property
    def uploads_predictions(self) -> bool:
        return self.card.uploads_predictions

    @property
    def uploads_weights(self) -> bool:
        return self.card.uploads_weights

    def upload_summary(self) -> str:
        """What one client sends after local training, in words."""
        return self.card.upload_summary()

    @property
    def uploads_class_knowledge(self) -> bool:
        return self.card.uploads_class_knowledge

    def private_loss(self, cfg: ExperimentConfig, model: torch.nn.Module, knowledge: np.ndarray) -> ModelLoss:
        """Data-free algorithms: the loss of every private step while a client holds the fused
        per-class ``knowledge`` (C, D) (cross-entropy plus the algorithm's regulariser)."""
        raise TypeError(f"{type(self).__name__} uploads no per-class knowledge")

    def transfer_rows(self, cfg: ExperimentConfig, server_round: int) -> np.ndarray | None:
        """Rows of the transfer set used this round (uploads, targets, distillation); None: all."""
        return None

    def knowledge_temperature(self, train: TrainConfig) -> float:
        """T of the uploaded soft predictions, of the targets and of the distillation loss."""
        return self.fixed_temperature if self.fixed_temperature is not None else train.temperature


FUSIONS: Registry[FusionAlgorithm] = Registry("algorithm", plugins=FusionAlgorithm)


def transfer_row_count(cfg: ExperimentConfig, server_round: int = 1) -> int:
    """Transfer rows a round's uploads and targets span: all, or the algorithm's subset (FedMD)."""
    rows = FUSIONS.get(cfg.fusion.algorithm).transfer_rows(cfg, server_round)
    return cfg.data.transfer_size if rows is None else len(rows)


def knowledge_rows(cfg: ExperimentConfig, server_round: int = 1) -> int:
    """Rows of an upload or a target: the round's transfer rows, or the classes (data-free)."""
    if FUSIONS.get(cfg.fusion.algorithm).uploads_class_knowledge:
        return dataset_spec(cfg.data).num_classes
    return transfer_row_count(cfg, server_round)


def mix(preds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums of client predictions: (K, N, C), (K, K) -> (K, N, C)."""
    return np.einsum("kj,jnc->knc", weights, preds)
