"""The data-free family: clients exchange per-class statistics of their private data, no transfer set.

After local training a client uploads, for each class it holds, the mean of a statistic over its
private training samples of that class: FD its soft predictions, FedProto its representation
(NaN rows for classes it does not hold; FedProto adds its class counts). The server fuses them per
class (``fuse_classes``) into each client's knowledge (C, D). A client then adds a regulariser
towards the knowledge of each sample's label to the cross-entropy of *every* private step: the
makeup and revisit steps after this round's exchange, and the next round's local steps (the
server sends the knowledge again with ``train.local``, so clients keep no state and a resumed run
needs only the server's checkpoint). The step budget is local's, step for step: no transfer set,
no distillation phase (fedkd/budget.py).
"""

from __future__ import annotations

import numpy as np
import torch

from fedkd.config import ExperimentConfig
from fedkd.data.federation import ClientData
from fedkd.fusion.base import FusionAlgorithm, FusionResult
from fedkd.protocol import ProtocolError


def class_means(values: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means of (N, D) ``values`` over (N,) int ``labels`` -> ((C, D) float64 means, NaN
    rows for classes absent; (C,) float64 counts)."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)  # (C,)
    sums = np.zeros((classes, values.shape[1]))
    np.add.at(sums, labels, values)  # (C, D)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return means, counts


def class_shares(present: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """(K, C) bool present, (K, C) weight of each client in each class's mean -> (K,) each client's
    share averaged over the classes that have a mean (a row of the who-learned-from-whom matrix)."""
    total = mass.sum(axis=0)  # (C,)
    has = total > 0
    if not has.any():
        return np.zeros(present.shape[0])
    return (mass[:, has] / total[has]).mean(axis=1)


class ClassKnowledgeAlgorithm(FusionAlgorithm):
    """Shared by FD and FedProto: the client's statistic, the checks and the wire width."""

    def knowledge_width(self, cfg: ExperimentConfig) -> int:
        """D of the per-class knowledge."""
        raise NotImplementedError

    def statistic(self, cfg: ExperimentConfig, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) private inputs -> (N, D) float64: what is averaged per class."""
        raise NotImplementedError

    def sends_counts(self) -> bool:
        """Whether the upload carries the client's per-class sample counts (weights of the mean)."""
        return False

    def class_knowledge(
        self, cfg: ExperimentConfig, model: torch.nn.Module, data: ClientData
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Client side, after local training: ((C, D) per-class means over the private training
        split, NaN rows for classes absent; (C,) counts when the algorithm sends them)."""
        means, counts = class_means(
            self.statistic(cfg, model, data.train_x), data.train_y.numpy(), data.num_classes
        )
        return means, counts if self.sends_counts() else None

    def check_values(self, values: np.ndarray) -> None:
        """Server side: the present rows of one (C, D) upload or target are admissible."""

    def fuse_classes(
        self, knowledge: np.ndarray, counts: np.ndarray | None, cfg: ExperimentConfig
    ) -> FusionResult:
        """(K, C, D) uploads (NaN rows: class absent), (K, C) counts or None -> per-client (C, D)
        knowledge and the (K, K) weights."""
        raise NotImplementedError

    def checked_upload(self, values: np.ndarray, counts: np.ndarray | None, most: float) -> None:
        """One client's upload: rows wholly present or wholly NaN, admissible values, and (when sent)
        one integer count of at least 1 per present row, none above ``most`` in total."""
        missing = np.isnan(values)
        absent = missing.all(axis=1)  # (C,)
        if (missing.any(axis=1) & ~absent).any():
            raise ProtocolError("per-class knowledge has rows that are partly NaN")
        if absent.all():
            raise ProtocolError("per-class knowledge holds no class")
        self.check_values(values[~absent])
        if counts is None:
            return
        if counts.shape != (int((~absent).sum()),) or not np.isfinite(counts).all():
            raise ProtocolError(f"class counts have shape {counts.shape}, one per present class expected")
        if (counts < 1).any() or (counts != np.round(counts)).any() or counts.sum() > most:
            raise ProtocolError(f"class counts must be integers >= 1 summing to at most {most:g}")
