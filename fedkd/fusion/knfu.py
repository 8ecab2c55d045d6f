"""KnFu (arXiv 2403.11892): fuse, per client, only its semantic neighbours' knowledge.

Our reading (each step a config option): EPD_k = mean soft prediction of client k;
d_kj = divergence(EPD_k, EPD_j); neighbours of k = clients with d_kj under a threshold (the
mean of row k over the other clients, or a fixed value) or the top-m closest; weights
w_kj = softmax over neighbours of (-beta * d_kj); target_k = sum_j w_kj p_j. A client whose
only neighbour is itself gets no target and keeps learning locally.
"""

from __future__ import annotations

import numpy as np

from fedkd.config import ConfigError, FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult, mix
from fedkd.fusion_cards import CARDS
from fedkd.knowledge import divergence_matrix


def neighbour_mask(d: np.ndarray, cfg: FusionConfig) -> np.ndarray:
    """(K, K) divergences -> (K, K) bool, True where j is a semantic neighbour of k."""
    k = d.shape[0]
    others = ~np.eye(k, dtype=bool)
    if cfg.neighbour_rule == "mean-threshold":
        row_mean = (d * others).sum(axis=1, keepdims=True) / max(k - 1, 1)  # (K, 1)
        mask = (d <= row_mean) & others
    elif cfg.neighbour_rule == "fixed-threshold":
        mask = (d <= cfg.neighbour_threshold) & others
    elif cfg.neighbour_rule == "top-m":
        masked = np.where(others, d, np.inf)
        # stable sort: ties go to the lower client index, so the rule is deterministic
        closest = np.argsort(masked, axis=1, kind="stable")[:, : min(cfg.neighbour_top_m, k - 1)]
        mask = np.zeros_like(others)
        np.put_along_axis(mask, closest, True, axis=1)
    else:
        raise ConfigError(
            f"unknown neighbour-rule {cfg.neighbour_rule!r}; allowed: mean-threshold, fixed-threshold, top-m"
        )
    if cfg.include_self:
        mask |= ~others
    return mask


def neighbour_weights(d: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """Row softmax of -beta * d restricted to the mask; rows with no neighbour -> e_k."""
    logits = np.where(mask, -beta * d, -np.inf)  # (K, K)
    empty = ~mask.any(axis=1)
    logits[empty, :] = -np.inf
    logits[empty, np.flatnonzero(empty)] = 0.0
    logits = logits - logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


class KnFu(FusionAlgorithm):
    card = CARDS["knfu"]

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        d = divergence_matrix(preds, cfg.divergence)  # (K, K)
        mask = neighbour_mask(d, cfg)
        weights = neighbour_weights(d, mask, cfg.beta)
        fused = mix(preds, weights)  # (K, N, C)
        alone = ~(mask & ~np.eye(len(d), dtype=bool)).any(axis=1)  # only itself (or nobody)
        targets = [None if alone[k] else fused[k] for k in range(len(d))]
        return FusionResult(targets=targets, weights=weights)


FUSIONS.register("knfu")(KnFu())


class GuardedKnFu(KnFu):
    """KnFu plus a client-side guard (beyond the paper): a client keeps the distilled model only
    if accuracy on a held-out slice of its private data did not drop by more than
    ``guard-tolerance``; otherwise it rolls back to its pre-distillation model for that round."""

    card = CARDS["knfu-guard"]
    guarded = True


FUSIONS.register("knfu-guard")(GuardedKnFu())
