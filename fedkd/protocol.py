"""The message vocabulary of fedkd and the checks on every field a reply carries.

Both sides import this module (clients/ builds replies with these keys, server/ reads and
validates them); neither imports the other. It is pure Python/numpy: the Flower record types
stay on each side. A check that fails raises ``ProtocolError`` with a few words saying why; the
server then drops that reply for the round and records the reason, it never crashes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedkd.knowledge import simplex_violation

# message types (Flower: "<category>.<action>")
HELLO = "query.hello"
TRAIN_LOCAL = "train.local"
TRAIN_DISTILL = "train.distill"

# record keys
MODEL_KEY = "model"  # context.state: the client's model weights
KNOWLEDGE_KEY = "knowledge"  # train.local reply: ArrayRecord {SOFT: (N_t, C) float32}
TARGET_KEY = "target"  # train.distill content: ArrayRecord {SOFT: (N_t, C) float32}
WEIGHTS_KEY = "weights"  # model weights (weight averaging), both directions
METRICS_KEY = "metrics"
CONFIG_KEY = "config"
INFO_KEY = "info"
SOFT = "soft"  # the array inside KNOWLEDGE_KEY / TARGET_KEY records

# metric keys and their allowed ranges (inclusive)
ACCURACY = (0.0, 1.0)
COUNT = (0.0, math.inf)
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "local-acc": ACCURACY,
    "global-acc": ACCURACY,
    "local-test-size": COUNT,
    "num-examples": COUNT,
    "private-samples": COUNT,
    "transfer-samples": COUNT,
    "compute-seconds": COUNT,
    "rolled-back": ACCURACY,
}
SIMPLEX_TOLERANCE = 1e-3

# Every number a client sends besides its (optionally noised) soft predictions: none of these is
# noised or accounted by the privacy mechanism. results.json (privacy.unprotected) and the threat
# model in docs/privacy.md list them; a test keeps the three in step with METRIC_RANGES.
UNPROTECTED: dict[str, str] = {
    "partition-id": "which private split the node holds (hello and every reply)",
    "device": "what the client computes on (hello)",
    "train-loss": "mean training loss on the private training data",
    "num-examples": "size of the private training set",
    "private-samples": "private samples processed this round",
    "local-acc": "accuracy on the client's private held-out split",
    "local-test-size": "size of that held-out split",
    "global-acc": "accuracy of the privately trained model on the shared global test set",
    "distill-loss": "distillation loss on the public transfer set",
    "transfer-samples": "transfer rows distilled on this round",
    "rolled-back": "whether the guard (on a private validation slice) undid the distillation",
    "compute-seconds": "time spent on the client's own compute",
    "weights": "the whole model (weight-averaging algorithms only: fedavg)",
    "error-reason": "the first line of a client's error message, when its step fails",
}


class ProtocolError(ValueError):
    """A reply field that cannot be used; the message says why in a few words."""


def error_summary(reason: str | None) -> str:
    """The first line of a client's error reason (any reason, even an empty one)."""
    lines = (reason or "").strip().splitlines()
    return lines[0][:200] if lines else "no reason given"


def partition_id_of(metrics: Mapping[str, Any], num_clients: int) -> int:
    """The reply's partition id: a finite integer in 0..num_clients-1."""
    if "partition-id" not in metrics:
        raise ProtocolError("reply has no partition id")
    value = metrics["partition-id"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"partition id {value!r} is not a finite number")
    if float(value) != int(value) or not 0 <= int(value) < num_clients:
        raise ProtocolError(f"unknown partition id {value!r}")
    return int(value)


def checked_metrics(metrics: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, float]:
    """The known metrics as floats, each finite and in its range; ``required`` must be there."""
    missing = [key for key in required if key not in metrics]
    if missing:
        raise ProtocolError(f"reply has no {missing[0]!r} metric")
    out: dict[str, float] = {}
    for key, (low, high) in METRIC_RANGES.items():
        if key not in metrics:
            continue
        value = metrics[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(f"metric {key} = {value!r} is not a finite number")
        if not low <= value <= high:
            raise ProtocolError(f"metric {key} = {value!r} is outside {low:g}..{high:g}")
        out[key] = float(value)
    return out


def checked_soft(soft: np.ndarray, expected_shape: tuple[int, int]) -> np.ndarray:
    """Soft predictions or targets: the expected (N, C) shape, finite, rows on the simplex."""
    if soft.shape != expected_shape:
        raise ProtocolError(f"soft predictions have shape {soft.shape}, expected {expected_shape}")
    if not np.isfinite(soft).all():
        raise ProtocolError("soft predictions contain NaN or inf")
    violation = simplex_violation(soft)
    if violation > SIMPLEX_TOLERANCE:
        raise ProtocolError(f"soft prediction rows are off the simplex by {violation:.3g}")
    return soft


def checked_weights(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, tuple[int, ...]] | None
) -> None:
    """Model weights: finite, and the same names and shapes as ``reference`` (when known)."""
    if reference is not None:
        if set(arrays) != set(reference):
            raise ProtocolError("model weights name other layers than the federation's model")
        for name, arr in arrays.items():
            if tuple(arr.shape) != tuple(reference[name]):
                raise ProtocolError(
                    f"weights {name} have shape {tuple(arr.shape)}, expected {reference[name]}"
                )
    if not all(np.isfinite(arr).all() for arr in arrays.values()):
        raise ProtocolError("model weights contain NaN or inf")
