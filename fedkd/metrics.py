"""Round metrics: ALMA (average local model accuracy) and friends."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def alma(local_acc: Mapping[int, float], test_sizes: Mapping[int, float] | None = None) -> dict[str, float]:
    """Mean, std and min over clients of accuracy on each client's own local test split, and
    the standard error of the mean from test sampling alone: sqrt(sum_k a_k (1 - a_k) / n_k) / K
    (a client's accuracy on n_k test samples is a binomial proportion), and how many clients
    the mean covers."""
    keys = [k for k, v in local_acc.items() if np.isfinite(v)]
    values = np.array([local_acc[k] for k in keys], dtype=np.float64)
    nan = float("nan")
    if values.size == 0:
        return {"alma": nan, "alma_std": nan, "alma_min": nan, "alma_se": nan, "alma_clients": 0}
    se = nan
    if test_sizes is not None and all(test_sizes.get(k, 0) > 0 for k in keys):
        sizes = np.array([test_sizes[k] for k in keys], dtype=np.float64)
        se = float(np.sqrt((values * (1.0 - values) / sizes).sum()) / values.size)
    return {
        "alma": float(values.mean()),
        "alma_std": float(values.std()),
        "alma_min": float(values.min()),
        "alma_se": se,
        "alma_clients": int(values.size),  # how many clients the mean covers
    }


def prefixed(name: str, summary: dict[str, float]) -> dict[str, float]:
    """``alma(...)``'s keys renamed for another test set: alma_se -> {name}_se, alma -> {name}."""
    return {name + key[len("alma") :]: value for key, value in summary.items()}


def mean_finite(values) -> float:
    arr = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def mean_self_weight(weights: np.ndarray, fused: list[int]) -> float:
    """Mean weight a client gives its own prediction, over the clients that got a target
    (``fused``: their rows in the weights, row = student). Near 1: the "fusion" is mostly
    self-distillation."""
    if not fused:
        return float("nan")
    return float(np.mean([weights[k, k] for k in fused]))


def positions(clients: list[int], among: list[int]) -> list[int]:
    """Where each of ``clients`` sits in ``among`` (a round's weights are over its participants)."""
    at = {client: i for i, client in enumerate(among)}
    return [at[client] for client in clients]
