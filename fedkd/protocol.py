"""The message vocabulary of fedkd and the checks on every field a reply carries.

Both sides import this module (clients/ builds replies with these keys, server/ reads and
validates them); neither imports the other. It is pure Python/numpy: the Flower record types
stay on each side. A check that fails raises ``ProtocolError`` with a few words saying why; the
server then drops that reply for the round and records the reason, it never crashes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from fedkd import compression
from fedkd.knowledge import simplex_violation
from fedkd.metric_specs import metric_specs

# message types (Flower: "<category>.<action>")
HELLO = "query.hello"
TRAIN_LOCAL = "train.local"
TRAIN_DISTILL = "train.distill"

# record keys
MODEL_KEY = "model"  # context.state: the client's model weights
# train.local reply: ArrayRecord {SOFT: (M, C) float32}, or its compressed form (fedkd/compression.py),
# plus ROWS (the packed (N_t,) mask of the M rows present) when the client withheld rows
KNOWLEDGE_KEY = "knowledge"
TARGET_KEY = "target"  # train.distill content: ArrayRecord {SOFT: (M, C) float32[, ROWS]}
WEIGHTS_KEY = "weights"  # model weights (weight averaging), both directions
METRICS_KEY = "metrics"
CONFIG_KEY = "config"
INFO_KEY = "info"
SOFT = compression.SOFT  # the array inside KNOWLEDGE_KEY / TARGET_KEY records
ROWS = compression.ROWS  # packed (N_t,) bool: which rows a sparse upload or target holds
COUNTS = "counts"  # (M,) float32: private samples per class of the M rows present (fedproto)

SIMPLEX_TOLERANCE = 1e-3

# What a client sends besides its metrics (fedkd/metric_specs.py) and its (optionally noised)
# soft predictions: none of it is noised or accounted by the privacy mechanism.
OTHER_FIELDS: dict[str, str] = {
    "partition-id": "which private split the node holds (hello and every reply)",
    "device": "what the client computes on (hello)",
    "weights": "the whole model (weight-uploading algorithms only: fedavg, feddf)",
    "rows": "which transfer rows a client uploads predictions for (selective-fd: from its private data)",
    "classes": "which classes a client holds: the rows of its per-class uploads (fd, fedproto)",
    "counts": "how many private samples a client holds of each class: its label histogram (fedproto)",
    "error-reason": "the first line of a client's error message, when its step fails",
}


def unprotected() -> dict[str, str]:
    """Every field a client sends unnoised, with what it reveals: results.json
    (privacy.unprotected) and the threat model in docs/privacy.md list them (a test keeps the
    two in step)."""
    return {**{spec.key: spec.reveals for spec in metric_specs()}, **OTHER_FIELDS}


def metric_ranges() -> dict[str, tuple[float, float]]:
    return {spec.key: spec.range for spec in metric_specs()}


# A client whose checkpoint cannot be written (run folder full or read-only) raises with this in
# its error: the server fails the run, where a dropped client would leave a "completed" run of fewer.
CHECKPOINT_NOT_WRITTEN = "checkpoint not written"


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
    number = _finite(value)
    if number is None:
        raise ProtocolError(f"partition id {_short(value)} is not a finite number")
    if number != int(number) or not 0 <= int(number) < num_clients:
        raise ProtocolError(f"unknown partition id {_short(value)}")
    return int(number)


def checked_metrics(
    metrics: Mapping[str, Any],
    required: tuple[str, ...] = (),
    limits: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """The known metrics as floats, each finite and in its range (``limits`` narrows ranges to what
    the data allows); ``required`` must be there."""
    missing = [key for key in required if key not in metrics]
    if missing:
        raise ProtocolError(f"reply has no {missing[0]!r} metric")
    out: dict[str, float] = {}
    for key, (low, high) in {**metric_ranges(), **(limits or {})}.items():
        if key not in metrics:
            continue
        value = _finite(metrics[key])
        if value is None:
            raise ProtocolError(f"metric {key} = {_short(metrics[key])} is not a finite number")
        if not low <= value <= high:
            raise ProtocolError(f"metric {key} = {value!r} is outside {low:g}..{high:g}")
        out[key] = value
    return out


def _finite(value: Any) -> float | None:
    """A metric value as a finite float; None for anything else (bools, lists, text, huge ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    return repr(value)[:40]


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


def checked_sparse_soft(soft: np.ndarray, expected_shape: tuple[int, int]) -> np.ndarray:
    """Soft predictions or targets whose missing rows are all-NaN: the rows present are checked
    as ``checked_soft`` checks a dense array; a row that is partly NaN is malformed."""
    if soft.shape != expected_shape:
        raise ProtocolError(f"soft predictions have shape {soft.shape}, expected {expected_shape}")
    missing = np.isnan(soft)
    absent = missing.all(axis=1)  # (N,)
    if (missing.any(axis=1) & ~absent).any():
        raise ProtocolError("soft predictions have rows that are partly NaN")
    checked_soft(soft[~absent], (int((~absent).sum()), expected_shape[1]))
    return soft


def sparse_arrays(soft: np.ndarray) -> dict[str, np.ndarray]:
    """(N, C) with all-NaN rows where nothing is sent -> the arrays that travel: SOFT (M, C)
    float32, and ROWS (packed mask) only when a row is missing."""
    present = ~np.isnan(soft).all(axis=1)  # (N,)
    arrays = {SOFT: np.ascontiguousarray(soft[present], dtype=np.float32)}
    if not present.all():
        arrays[ROWS] = compression.pack_mask(present)
    return arrays


def dense_soft(arrays: Mapping[str, np.ndarray], rows: int, classes: int, fusion: Any) -> np.ndarray:
    """An upload or target's arrays -> (rows, C) float64 with all-NaN rows where none was sent.
    ``fusion``: the FusionConfig whose ``compression`` settings say how the values are encoded
    (targets are never compressed: pass None)."""
    mask = np.ones(rows, dtype=bool)
    try:
        if ROWS in arrays:
            mask = compression.unpack_mask(np.asarray(arrays[ROWS]), rows)
        method = fusion.compression if fusion is not None else "none"
        k, bits = (fusion.compression_k, fusion.compression_bits) if fusion is not None else (0, 0)
        values = compression.decode(arrays, int(mask.sum()), classes, method, k, bits)
    except ValueError as why:
        raise ProtocolError(str(why)) from None
    soft = np.full((rows, classes), np.nan)
    soft[mask] = values
    return soft


def array_from_npy(
    data: bytes, dtype: str, shape: tuple[int, ...], dtypes: Collection[str], most: int
) -> np.ndarray:
    """One array as it travels (npy bytes, and the dtype and shape its record claims) -> the array,
    only when the bytes hold exactly that: an allowed dtype, at most ``most`` entries, a plain npy
    header (never a pickle or a zip) and no byte more or less than the entries need."""
    if dtype not in dtypes:
        raise ProtocolError(f"dtype {dtype[:20]!r}; allowed: {', '.join(sorted(dtypes))}")
    if not all(isinstance(n, int) and n >= 0 for n in shape) or math.prod(shape) > most:
        raise ProtocolError(f"shape {str(shape)[:60]} holds more than {most} entries or is malformed")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            stored, fortran, kind = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            stored, fortran, kind = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy version {version}")
    except ValueError as why:
        raise ProtocolError(f"bytes are not a plain npy array ({error_summary(str(why))[:60]})") from None
    if tuple(stored) != tuple(shape) or kind != np.dtype(dtype):
        held = f"{str(kind)[:20]} {str(tuple(stored))[:60]}"
        raise ProtocolError(f"bytes hold {held}, the record says {dtype} {shape}")
    body = data[stream.tell() :]
    if len(body) != kind.itemsize * math.prod(shape):
        raise ProtocolError(f"{len(body)} data bytes, {kind.itemsize * math.prod(shape)} expected")
    return np.frombuffer(body, dtype=kind).reshape(shape, order="F" if fortran else "C")
