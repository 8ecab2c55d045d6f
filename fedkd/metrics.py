"""Round metrics: ALMA (average local model accuracy) and friends."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def alma(local_acc: Mapping[int, float]) -> dict[str, float]:
    """Mean, std and min over clients of accuracy on each client's own local test split."""
    values = np.array([v for v in local_acc.values() if np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        nan = float("nan")
        return {"alma": nan, "alma_std": nan, "alma_min": nan}
    return {"alma": float(values.mean()), "alma_std": float(values.std()), "alma_min": float(values.min())}


def mean_finite(values) -> float:
    arr = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")
