"""FedAvg reference for same-architecture runs: clients upload weights, not predictions.

The averaging itself is Flower's own ``FedAvg.aggregate_train`` (server/exchanges.py);
this entry only declares the exchange. It needs one architecture for every client.
"""

from __future__ import annotations

import numpy as np

from fedkd.config import FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult
from fedkd.fusion_cards import CARDS


class FedAvgReference(FusionAlgorithm):
    card = CARDS["fedavg"]
    needs_one_architecture = True

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        raise TypeError("fedavg averages weights on the server; it has no prediction fusion")


FUSIONS.register("fedavg")(FedAvgReference())
