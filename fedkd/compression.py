"""Compressed soft-label uploads (after Sattler et al. 2020) and sparse row masks.

A client's upload is a dict of named arrays, the exact bytes that travel (``bytes_up`` counts them):

- ``none``: ``soft`` (M, C) float32;
- ``topk``: ``topk-index`` (M, k) uint8 and ``topk-value`` (M, k) float32, the k largest entries of
  each row; the server spreads the rest of the row's mass evenly over the other C - k classes, so
  every decoded row is back on the simplex;
- ``quant``: ``quant`` (ceil(M C b / 8),) uint8, each entry rounded to the nearest of 2^b evenly
  spaced levels in [0, 1] and packed b bits at a time (first entry in the highest bits); the
  server reads level 0 as a quarter level (the mean of what rounds to 0, [0, half a level)), so
  no decoded entry is an exact zero that a log-domain method (FedMD's and FedDF's averaged
  logits, KT-pFL's KL) would turn into a veto, then divides by 2^b - 1 and renormalises each row
  (a row that rounds to all zeros becomes uniform). Rounding is deterministic: the same
  predictions always give the same bytes.

A sparse upload (Selective-FD) adds ``rows``: the (N,) bool mask of the rows present, packed 8 per
byte; the M = popcount rows follow in order. Decoding checks every array it reads and raises
``ValueError`` with a few words on anything malformed (the server then drops the reply).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

COMPRESSIONS = ("none", "topk", "quant")
QUANT_BITS = (8, 4, 2)
SOFT = "soft"
TOPK_INDEX = "topk-index"
TOPK_VALUE = "topk-value"
QUANT = "quant"
ROWS = "rows"
ARRAY_DTYPES = {SOFT: "float32", TOPK_INDEX: "uint8", TOPK_VALUE: "float32", QUANT: "uint8", ROWS: "uint8"}
ARRAY_NAMES = tuple(ARRAY_DTYPES)
_SUM_TOLERANCE = 1e-3


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """(N,) bool -> (ceil(N / 8),) uint8."""
    return np.packbits(np.asarray(mask, dtype=bool))


def unpack_mask(packed: np.ndarray, rows: int) -> np.ndarray:
    """(ceil(N / 8),) uint8 -> (N,) bool; padding bits must be zero."""
    if packed.dtype != np.uint8 or packed.shape != ((rows + 7) // 8,):
        raise ValueError(f"row mask has shape {packed.shape} ({packed.dtype}), expected ({(rows + 7) // 8},)")
    bits = np.unpackbits(packed)
    if bits[rows:].any():
        raise ValueError("row mask has bits set past the last row")
    return bits[:rows].astype(bool)


def _pack_levels(levels: np.ndarray, bits: int) -> np.ndarray:
    """(L,) integers < 2^bits -> (ceil(L bits / 8),) uint8, big-endian within each byte."""
    per_entry = np.unpackbits(levels.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]  # (L, bits)
    return np.packbits(per_entry.reshape(-1))


def _unpack_levels(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(packed)[: count * bits].reshape(count, bits)  # (L, bits)
    weights = 1 << np.arange(bits - 1, -1, -1)
    return flat.astype(np.int64) @ weights


def encode(soft: np.ndarray, method: str, k: int = 2, bits: int = 8) -> dict[str, np.ndarray]:
    """(M, C) soft predictions -> the arrays that go over the wire."""
    soft = np.asarray(soft, dtype=np.float64)
    if method == "none":
        return {SOFT: np.ascontiguousarray(soft, dtype=np.float32)}
    if method == "topk":
        # stable sort on -p: ties go to the lower class index, so the bytes are deterministic
        index = np.argsort(-soft, axis=1, kind="stable")[:, :k]  # (M, k)
        value = np.take_along_axis(soft, index, axis=1)  # (M, k)
        return {TOPK_INDEX: index.astype(np.uint8), TOPK_VALUE: value.astype(np.float32)}
    if method == "quant":
        top = (1 << bits) - 1
        levels = np.rint(np.clip(soft, 0.0, 1.0) * top).astype(np.int64)  # (M, C) in 0..top
        return {QUANT: _pack_levels(levels.reshape(-1), bits)}
    raise ValueError(f"unknown compression {method!r}; allowed: {', '.join(COMPRESSIONS)}")


def decode(
    arrays: Mapping[str, np.ndarray], rows: int, classes: int, method: str, k: int, bits: int
) -> np.ndarray:
    """The arrays of one upload (without ``rows``) -> (M, C) float64 rows on the simplex."""
    expected = {"none": {SOFT}, "topk": {TOPK_INDEX, TOPK_VALUE}, "quant": {QUANT}}[method]
    present = set(arrays) - {ROWS}
    if present != expected:
        raise ValueError(f"upload carries {sorted(present)}, compression={method} sends {sorted(expected)}")
    if method == "none":
        soft = np.asarray(arrays[SOFT], dtype=np.float64)
        if soft.shape != (rows, classes):
            raise ValueError(f"soft predictions have shape {soft.shape}, expected {(rows, classes)}")
        return soft
    if method == "topk":
        index, value = np.asarray(arrays[TOPK_INDEX]), np.asarray(arrays[TOPK_VALUE], dtype=np.float64)
        if index.shape != (rows, k) or value.shape != (rows, k) or index.dtype != np.uint8:
            raise ValueError(f"top-k arrays have shapes {index.shape}, {value.shape}, expected {(rows, k)}")
        if (index >= classes).any() or (rows and (np.diff(np.sort(index, axis=1), axis=1) == 0).any()):
            raise ValueError("top-k indices are out of range or repeated within a row")
        if not np.isfinite(value).all() or (value < 0).any():
            raise ValueError("top-k values are negative, NaN or inf")
        rest = 1.0 - value.sum(axis=1, keepdims=True)  # (M, 1) mass of the C - k classes not sent
        if (rest < -_SUM_TOLERANCE).any():
            raise ValueError("top-k values of a row sum to more than 1")
        soft = np.repeat(np.clip(rest, 0.0, None) / (classes - k), classes, axis=1)  # (M, C)
        np.put_along_axis(soft, index.astype(np.int64), value, axis=1)
        return soft
    packed = np.asarray(arrays[QUANT])
    size = (rows * classes * bits + 7) // 8
    if packed.dtype != np.uint8 or packed.shape != (size,):
        raise ValueError(f"quantised upload has shape {packed.shape} ({packed.dtype}), expected ({size},)")
    levels = _unpack_levels(packed, rows * classes, bits).reshape(rows, classes).astype(np.float64)
    levels = np.where(levels == 0, 0.25, levels)  # (M, C): what rounded to 0 was in [0, 0.5)
    return levels / levels.sum(axis=1, keepdims=True)


def encoded_bytes(rows: int, classes: int, method: str, k: int, bits: int) -> int:
    """Payload bytes of one upload of ``rows`` rows (without array headers or a row mask)."""
    if method == "none":
        return rows * classes * 4
    if method == "topk":
        return rows * k * (1 + 4)
    return (rows * classes * bits + 7) // 8
