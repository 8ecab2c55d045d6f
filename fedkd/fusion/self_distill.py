"""Self-distillation control: every client distils towards its own uploaded predictions.

The same phases, temperature and optimiser steps as any prediction-sharing method, and no
knowledge from a peer (weights = I): what KnFu degenerates into when a client's self-weight is 1.
"Knowledge from peers helps" must beat this control and local. The target is the model's own
output, so the distillation starts at its minimum: without dropout or batch norm (the zoo's
models) its gradients are rounding noise that Adam scales into small steps (docs/design.md).
Beyond any one paper; a control of fedkd's.
"""

from __future__ import annotations

import numpy as np

from fedkd.config import FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult
from fedkd.fusion_cards import CARDS


class SelfDistill(FusionAlgorithm):
    card = CARDS["self-distill"]  # personalised: each client gets its own predictions back

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        k = preds.shape[0]  # preds: (K, N, C)
        return FusionResult(targets=[preds[i] for i in range(k)], weights=np.eye(k))


FUSIONS.register("self-distill")(SelfDistill())
