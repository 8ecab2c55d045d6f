"""FedAvg reference for same-architecture runs: clients upload weights, not predictions.

The averaging itself is Flower's own ``FedAvg.aggregate_train`` (server/exchanges.py);
this entry only declares the exchange. It needs one architecture for every client.
"""

from __future__ import annotations

import numpy as np

from fedkd.config import FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult


class FedAvgReference(FusionAlgorithm):
    uploads = "weights"
    guarded = False
    needs_one_architecture = True
    paper = "McMahan et al. 2017, FedAvg (AISTATS, arXiv 1602.05629)"

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        raise TypeError("fedavg averages weights on the server; it has no prediction fusion")


FUSIONS.register("fedavg")(FedAvgReference())
