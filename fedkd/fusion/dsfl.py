"""DS-FL (Itahara et al., 2021): entropy reduction aggregation (ERA).

As in the paper, clients upload plain (T = 1) probabilities; the server averages them and
sharpens the mean with a softmax at a low temperature (``dsfl-temperature``, default 0.1) to
cut the entropy that averaging non-IID predictions adds; every client gets the same target and
distils at T = 1 (KL to a fixed target has the gradient of the paper's soft cross-entropy).
"""

from __future__ import annotations

import numpy as np

from fedkd.config import FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult
from fedkd.fusion_cards import CARDS
from fedkd.knowledge import softmax


class DSFLEntropyReduction(FusionAlgorithm):
    card = CARDS["dsfl"]
    fixed_temperature = 1.0

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        k = preds.shape[0]
        sharpened = softmax(preds.mean(axis=0), cfg.dsfl_temperature)  # (N, C)
        return FusionResult(targets=[sharpened] * k, weights=np.full((k, k), 1.0 / k))


FUSIONS.register("dsfl")(DSFLEntropyReduction())
