"""Noise on soft targets before they leave a client, and what it buys (accounting).

Mechanisms: ``gaussian`` (rows clipped to L2 norm ``clip``, N(0, (z*clip)^2) per entry) and
``laplace`` (rows clipped to L1 norm ``clip``, Laplace(b) per entry), on the probabilities or on
log-probabilities ("logits"), then projected back onto the probability simplex (projection is
post-processing: it costs no privacy).

Sensitivity models ("what one protected unit can change"):
- ``row``: one transfer-set row of one client's release (example-level protection of the
  public-set answers): L2 sensitivity clip, L1 sensitivity clip.
- ``client``: one client's whole release of N rows (client-level protection):
  L2 sensitivity clip*sqrt(N), L1 sensitivity clip*N.
The effective Gaussian noise multiplier is (per-entry std) / (L2 sensitivity); epsilon is
accounted with Flower's RdpAccountant (Google's dp-accounting), one release per round per
client, no sampling amplification. Laplace releases compose by basic composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedkd.config import PrivacyConfig

_EPS = 1e-12


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


def clip_rows(x: np.ndarray, bound: float, order: int) -> np.ndarray:
    norms = np.linalg.norm(x, ord=order, axis=-1, keepdims=True)
    return x * np.minimum(1.0, bound / np.maximum(norms, _EPS))


def sensitivity(cfg: PrivacyConfig, rows: int) -> tuple[float, float]:
    """(L2, L1) sensitivity of one release of ``rows`` clipped rows under the sensitivity model."""
    if cfg.sensitivity_model == "row":
        return cfg.clip, cfg.clip
    return cfg.clip * math.sqrt(rows), cfg.clip * rows


def noise_scale(cfg: PrivacyConfig, rows: int) -> float:
    """Per-entry std (gaussian) or scale b (laplace).

    With ``calibrate-from = target-epsilon`` the scale is calibrated per release: the classic Gaussian
    mechanism sigma = Delta2 * sqrt(2 ln(1.25/delta)) / epsilon (stated for epsilon < 1), or
    b = Delta1 / epsilon for Laplace. Otherwise: noise multiplier times the clip bound.
    """
    l2, l1 = sensitivity(cfg, rows)
    if cfg.calibrate_from == "target-epsilon":
        if cfg.mechanism == "gaussian":
            return l2 * math.sqrt(2 * math.log(1.25 / cfg.delta)) / cfg.target_epsilon
        return l1 / cfg.target_epsilon
    return cfg.noise_multiplier * cfg.clip


def add_noise(x: np.ndarray, cfg: PrivacyConfig, rows: int, rng: np.random.Generator) -> np.ndarray:
    """The mechanism itself: i.i.d. Gaussian (std) or Laplace (scale b) noise on every entry."""
    scale = noise_scale(cfg, rows)
    if cfg.mechanism == "gaussian":
        return x + rng.normal(0.0, scale, size=x.shape)
    return x + rng.laplace(0.0, scale, size=x.shape)


def privatize(
    soft: np.ndarray, cfg: PrivacyConfig, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """(N, C) soft predictions -> clipped, noised, simplex-projected (N, C)."""
    if cfg.mechanism == "none":
        return soft
    x = (
        np.log(np.clip(soft, _EPS, None)) * temperature
        if cfg.noise_on == "logits"
        else soft.astype(np.float64)
    )
    noisy = add_noise(
        clip_rows(x, cfg.clip, 2 if cfg.mechanism == "gaussian" else 1), cfg, soft.shape[0], rng
    )
    if cfg.noise_on == "logits":
        z = noisy / temperature
        z = z - z.max(axis=-1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return project_to_simplex(noisy)


@dataclass
class PrivacyLedger:
    """Cumulative epsilon per client, one release per participating round."""

    cfg: PrivacyConfig
    rows: int

    def __post_init__(self) -> None:
        self.releases: dict[int, int] = {}
        self._cache: dict[int, float] = {}

    @property
    def method(self) -> str:
        model = f"sensitivity model: {self.cfg.sensitivity_model}"
        if self.cfg.mechanism == "gaussian":
            return f"RDP (dp-accounting via Flower), delta={self.cfg.delta:g}, {model}"
        return f"basic composition of pure eps-DP Laplace releases, {model}"

    def per_release_epsilon(self) -> float:
        """Laplace: Delta1 / b."""
        _, l1 = sensitivity(self.cfg, self.rows)
        return l1 / noise_scale(self.cfg, self.rows)

    def effective_multiplier(self) -> float:
        """Gaussian: per-entry std / L2 sensitivity."""
        l2, _ = sensitivity(self.cfg, self.rows)
        return noise_scale(self.cfg, self.rows) / l2

    def epsilon_for(self, count: int) -> float:
        """Epsilon after ``count`` identical releases (all of a client's releases are alike)."""
        if count == 0:
            return 0.0
        if self.cfg.mechanism == "laplace":
            return count * self.per_release_epsilon()
        if count not in self._cache:
            from flwr.serverapp import (
                GaussianPrivacyEvent,
                NeighboringRelation,
                PrivacyConfig,
                RdpAccountant,
                SamplingMethod,
            )

            config = PrivacyConfig(
                target_delta=self.cfg.delta,
                population_size=1,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
            accountant = RdpAccountant(config)
            event = GaussianPrivacyEvent(
                noise_multiplier=self.effective_multiplier(), sample_size=1, population_size=1
            )
            accountant.compose(event, count)
            self._cache[count] = accountant.get_epsilon(self.cfg.delta)
        return self._cache[count]

    def epsilon_after(self, pid: int, extra: int = 0) -> float:
        """Cumulative epsilon of client ``pid`` after its releases so far (+ ``extra`` more)."""
        return self.epsilon_for(self.releases.get(pid, 0) + extra)

    def record_release(self, pid: int) -> None:
        self.releases[pid] = self.releases.get(pid, 0) + 1

    def would_exceed(self, pids: list[int]) -> bool:
        limit = self.cfg.max_epsilon
        return limit > 0 and any(self.epsilon_after(pid, extra=1) > limit for pid in pids)
