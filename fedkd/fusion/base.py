"""The contract between the round loop and a fusion algorithm.

The round loop never branches on an algorithm's name. It reads two flags: ``uploads`` (what
clients send after local training: "predictions", "weights" or "nothing") and ``guarded``
(clients keep a validation slice and undo a distillation that hurts it). For "predictions"
and "nothing" it sends each client the target ``fuse`` made for it (None: that client learns
locally this round).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkd.config import ExperimentConfig, FusionConfig, TrainConfig
from fedkd.registry import Registry


@dataclass(frozen=True)
class FusionResult:
    targets: list[np.ndarray | None]  # K entries: (N, C) target on the simplex, or None
    weights: np.ndarray  # (K, K): row k = how much client k learns from each client j


class FusionAlgorithm:
    uploads: str = "predictions"  # predictions | weights | nothing (server/exchanges.py EXCHANGES)
    guarded: bool = False
    # Temperature at which clients upload soft predictions and distil; None: `temperature`.
    # (DS-FL's paper works on plain T = 1 probabilities; see docs/design.md, fidelity.)
    fixed_temperature: float | None = None

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        """preds: (K, N, C) soft predictions of the K clients that replied, in a fixed order."""
        raise NotImplementedError

    def transfer_rows(self, cfg: ExperimentConfig, server_round: int) -> np.ndarray | None:
        """Rows of the transfer set used this round (uploads, targets, distillation); None: all."""
        return None

    def knowledge_temperature(self, train: TrainConfig) -> float:
        """T of the uploaded soft predictions, of the targets and of the distillation loss."""
        return self.fixed_temperature if self.fixed_temperature is not None else train.temperature


FUSIONS: Registry[FusionAlgorithm] = Registry("algorithm")


def mix(preds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums of client predictions: (K, N, C), (K, K) -> (K, N, C)."""
    return np.einsum("kj,jnc->knc", weights, preds)
