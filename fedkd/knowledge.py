"""Knowledge ops on soft predictions: EPD and divergences between clients.

Shapes: K clients, N transfer samples, C classes. ``preds`` is (K, N, C), rows on the simplex.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import rel_entr

from fedkd.registry import Registry

_EPS = 1e-12

Divergence = Callable[[np.ndarray], np.ndarray]  # (K, N, C) -> (K, K)
DIVERGENCES: Registry[Divergence] = Registry("divergence")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of logits / T (numerically stable)."""
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def epd(preds: np.ndarray) -> np.ndarray:
    """Estimated probability distribution per client: mean prediction, (K, N, C) -> (K, C)."""
    return preds.mean(axis=1)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p_k || q_j) for all pairs: p (K, C), q (K, C) -> (K, K)."""
    p = np.clip(p, _EPS, None)[:, None, :]  # (K, 1, C)
    q = np.clip(q, _EPS, None)[None, :, :]  # (1, K, C)
    return rel_entr(p, q).sum(axis=-1)


@DIVERGENCES.register("kl")
def kl_divergence(preds: np.ndarray) -> np.ndarray:
    """d_kj = KL(EPD_k || EPD_j): how surprising j's class beliefs are to k."""
    dist = epd(preds)
    return _kl_rows(dist, dist)


@DIVERGENCES.register("js")
def js_divergence(preds: np.ndarray) -> np.ndarray:
    """Symmetric, bounded (by ln 2) Jensen-Shannon divergence between EPDs."""
    dist = np.clip(epd(preds), _EPS, None)  # (K, C)
    mid = 0.5 * (dist[:, None, :] + dist[None, :, :])  # (K, K, C)
    left = rel_entr(dist[:, None, :], mid).sum(axis=-1)
    right = rel_entr(dist[None, :, :], mid).sum(axis=-1)
    return 0.5 * (left + right)


@DIVERGENCES.register("cosine")
def cosine_distance(preds: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of the full flattened predictions (K, N*C)."""
    flat = preds.reshape(preds.shape[0], -1)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), _EPS)
    return np.clip(1.0 - unit @ unit.T, 0.0, None)


def divergence_matrix(preds: np.ndarray, name: str) -> np.ndarray:
    """(K, N, C) -> (K, K) with zero diagonal."""
    d = DIVERGENCES.get(name)(preds)
    np.fill_diagonal(d, 0.0)
    return d


def simplex_violation(preds: np.ndarray) -> float:
    """Largest deviation of any row from the simplex (negative entry or sum != 1)."""
    return float(max(np.abs(preds.sum(axis=-1) - 1.0).max(initial=0.0), (-preds).max(initial=0.0)))


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto the probability simplex (Duchi et al., 2008)."""
    n = v.shape[-1]
    u = -np.sort(-v, axis=-1)  # descending
    css = np.cumsum(u, axis=-1) - 1.0
    k = np.arange(1, n + 1)
    cond = u - css / k > 0
    rho = n - 1 - np.argmax(cond[..., ::-1], axis=-1)  # last index where cond holds
    theta = np.take_along_axis(css, rho[..., None], axis=-1) / (rho[..., None] + 1.0)
    return np.maximum(v - theta, 0.0)
