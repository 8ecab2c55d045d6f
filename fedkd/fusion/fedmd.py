"""FedMD (Li & Wang, 2019): transfer learning, then every client digests one consensus and
revisits its private data.

FedMD starts with transfer learning: each model is trained on the labelled public data (the
reference code: up to 20 epochs, early stopping), then on its private data. ``fedmd`` does so on
the labelled transfer set for ``fedmd-pretrain-epochs`` (default 20) before a client's first local
training (the ``pretrain_epochs`` hook; ``pretrain-epochs``, offered to every algorithm, adds to
it); it is then the one method that uses the transfer labels. ``fedmd-nopretrain`` is FedMD
without that phase (fedkd's ``fedmd`` before issue 20).

FedMD's consensus is the average of the clients' *class scores* (logits) on the public set.
Clients here upload soft predictions p_k = softmax(z_k / T); since log p_k = z_k / T - lse_k,
softmax(mean_k log p_k) = softmax(mean_k z_k / T): the averaged class scores, softened at T
(a normalised geometric mean of the predictions, not their arithmetic mean). Clients then
distil towards it with KL at T (the paper matches logits with an L1 loss; KL at T approximates
logit matching, Hinton et al. 2015). Optional, as in the paper: a fresh public subset per round
(``fedmd-subset``). See docs/design.md, fidelity table.
"""

from __future__ import annotations

import numpy as np

from fedkd.config import ExperimentConfig, FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult
from fedkd.fusion_cards import CARDS
from fedkd.knowledge import softmax
from fedkd.seeding import numpy_rng

_EPS = 1e-12


def class_score_consensus(preds: np.ndarray) -> np.ndarray:
    """(K, N, C) soft predictions at T -> (N, C) softmax of the mean class scores at T."""
    return softmax(np.log(np.clip(preds, _EPS, None)).mean(axis=0))


class FedMDConsensus(FusionAlgorithm):
    def __init__(self, transfer_learning: bool) -> None:
        self.transfer_learning = transfer_learning  # pretrain on the labelled transfer set first
        self.card = CARDS["fedmd" if transfer_learning else "fedmd-nopretrain"]

    def pretrain_epochs(self, cfg: ExperimentConfig) -> int:
        own = cfg.fusion.fedmd_pretrain_epochs if self.transfer_learning else 0
        return cfg.train.pretrain_epochs + own

    def transfer_rows(self, cfg: ExperimentConfig, server_round: int) -> np.ndarray | None:
        """FedMD draws a fresh public subset each round (``fedmd-subset`` rows; 0: all)."""
        size, total = cfg.fusion.fedmd_subset, cfg.data.transfer_size
        if size <= 0 or size >= total:
            return None
        return np.sort(
            numpy_rng(cfg.run.seed, "fedmd-subset", server_round).choice(total, size, replace=False)
        )

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        k = preds.shape[0]
        consensus = class_score_consensus(preds)  # (N, C)
        return FusionResult(targets=[consensus] * k, weights=np.full((k, k), 1.0 / k))


FUSIONS.register("fedmd")(FedMDConsensus(transfer_learning=True))
FUSIONS.register("fedmd-nopretrain")(FedMDConsensus(transfer_learning=False))
