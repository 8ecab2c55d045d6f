"""Self-distillation control: every client distils towards its own uploaded predictions.

The same phases, temperature and optimiser steps as any prediction-sharing method, and no
knowledge from a peer (weights = I): what KnFu degenerates into when a client's self-weight is 1.
"Knowledge from peers helps" is a claim against this control, not against local (distilling at
all can help: train-mode noise such as dropout makes the client's own soft targets a
regulariser). Beyond any one paper; a control of fedkd's.
"""

from __future__ import annotations

import numpy as np

from fedkd.config import FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult


class SelfDistill(FusionAlgorithm):
    uploads = "predictions"
    personalised = True  # each client gets its own predictions back
    paper = "control (fedkd): the same distillation steps with no peer knowledge"

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        k = preds.shape[0]  # preds: (K, N, C)
        return FusionResult(targets=[preds[i] for i in range(k)], weights=np.eye(k))


FUSIONS.register("self-distill")(SelfDistill())
