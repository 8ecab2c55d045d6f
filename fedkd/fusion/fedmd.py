"""FedMD-style consensus: every client distils from the plain mean of all predictions."""

from __future__ import annotations

import numpy as np

from fedkd.config import FusionConfig
from fedkd.fusion.base import FUSIONS, FusionResult


class FedMDMean:
    uploads = "predictions"
    guarded = False

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        k = preds.shape[0]
        consensus = preds.mean(axis=0)  # (N, C)
        return FusionResult(targets=[consensus] * k, weights=np.full((k, k), 1.0 / k))


FUSIONS.register("fedmd")(FedMDMean())
