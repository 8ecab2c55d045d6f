"""Noise on soft targets before they leave a client, and what it buys (accounting).

Mechanisms: ``gaussian`` (rows clipped to L2 norm ``clip``, N(0, sigma^2) per entry) and
``laplace`` (rows clipped to L1 norm ``clip``, Laplace(b) per entry), on the probabilities or on
log-probabilities ("logits"), then mapped back onto the probability simplex (post-processing:
it costs no privacy).

Neighbouring relation: **replace-one**. A release always has N rows, so neighbouring releases
differ by *replacing* a row (``row`` model) or a client's whole release (``client`` model), never
by adding or removing one. Every clipped row lies in one orthant (probabilities >= 0,
log-probabilities <= 0), so two rows of norm <= c differ by at most sqrt(2) c in L2 and 2c in L1:
- ``row``: L2 sensitivity sqrt(2) c, L1 sensitivity 2c;
- ``client``: L2 sensitivity sqrt(2N) c, L1 sensitivity 2Nc.
The Gaussian release is then a Gaussian mechanism of noise multiplier sigma / Delta2, accounted
by Google's dp-accounting (``accountant``: ``analytic``, tight, or ``rdp``), one release per round per
client, no sampling amplification. Laplace releases are pure (Delta1 / b)-DP and compose
linearly (basic composition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedkd.config import PrivacyConfig
from fedkd.fusion import knowledge_rows
from fedkd.knowledge import project_to_simplex
from fedkd.run_plan import run_plan

_EPS = 1e-12


def clip_rows(x: np.ndarray, bound: float, order: int) -> np.ndarray:
    norms = np.linalg.norm(x, ord=order, axis=-1, keepdims=True)
    return x * np.minimum(1.0, bound / np.maximum(norms, _EPS))


def sensitivity(cfg: PrivacyConfig, rows: int) -> tuple[float, float]:
    """(L2, L1) replace-one sensitivity of one release of ``rows`` clipped same-orthant rows."""
    if cfg.sensitivity_model == "row":
        return math.sqrt(2.0) * cfg.clip, 2.0 * cfg.clip
    return math.sqrt(2.0 * rows) * cfg.clip, 2.0 * rows * cfg.clip


def _rdp_accountant():
    """dp-accounting's events take the multiplier relative to a change of one sensitivity unit,
    which its add/remove relation models; our unit is the replace-one Delta2 itself."""
    import dp_accounting

    return dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )


def gaussian_epsilon(multiplier: float, count: int, delta: float, accountant: str) -> float:
    """Epsilon of ``count`` Gaussian releases of noise multiplier sigma / Delta2, at ``delta``.

    ``analytic``: k identical Gaussian releases are exactly one Gaussian release of multiplier
    z / sqrt(k), whose tight epsilon is dp-accounting's analytic Gaussian (Balle & Wang 2018).
    ``rdp``: dp-accounting's Renyi-DP accountant (looser; the convention of Opacus / TF Privacy).
    """
    import dp_accounting

    if count == 0:
        return 0.0
    if accountant == "analytic":
        return float(dp_accounting.get_epsilon_gaussian(multiplier / math.sqrt(count), delta))
    acc = _rdp_accountant()
    acc.compose(dp_accounting.GaussianDpEvent(multiplier), count)
    return float(acc.get_epsilon(delta))


def calibrated_multiplier(target_epsilon: float, delta: float, accountant: str) -> float:
    """The smallest Gaussian noise multiplier whose single release is (target_epsilon, delta)-DP
    under ``accountant``, valid for every epsilon > 0 (the classic sqrt(2 ln(1.25/delta)) / epsilon
    holds only for epsilon < 1): dp-accounting's analytic Gaussian, or its mechanism calibration
    against the RDP accountant."""
    import dp_accounting

    if accountant == "analytic":
        return float(dp_accounting.get_sigma_gaussian(target_epsilon, delta))
    return float(
        dp_accounting.calibrate_dp_mechanism(
            _rdp_accountant,
            dp_accounting.GaussianDpEvent,
            target_epsilon,
            delta,
            tol=1e-9,
        )
    )


def noise_scale(cfg: PrivacyConfig, rows: int) -> float:
    """Per-entry std (gaussian) or scale b (laplace).

    With ``calibrate-from = target-epsilon`` the scale makes one release exactly
    ``target-epsilon``-DP (at ``delta`` for Gaussian; b = Delta1 / epsilon for Laplace).
    Otherwise: noise multiplier times the clip bound.
    """
    l2, l1 = sensitivity(cfg, rows)
    if cfg.calibrate_from == "target-epsilon":
        if cfg.mechanism == "gaussian":
            return l2 * calibrated_multiplier(cfg.target_epsilon, cfg.delta, cfg.accountant)
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
        protects = (
            "one row of a release (a transfer-set answer, or one class's mean), not a private example"
            if self.cfg.sensitivity_model == "row"
            else "a client's whole release of a round"
        )
        relation = f"replace-one neighbouring, {self.cfg.sensitivity_model}-level (protects {protects})"
        if self.cfg.mechanism == "gaussian":
            l2, _ = sensitivity(self.cfg, self.rows)
            return (
                f"Gaussian, dp-accounting {self.cfg.accountant}, delta={self.cfg.delta:g}, "
                f"{relation} (L2 sensitivity {l2:.4g})"
            )
        _, l1 = sensitivity(self.cfg, self.rows)
        return f"basic composition of pure eps-DP Laplace releases, {relation} (L1 sensitivity {l1:.4g})"

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
            self._cache[count] = gaussian_epsilon(
                self.effective_multiplier(), count, self.cfg.delta, self.cfg.accountant
            )
        return self._cache[count]

    def epsilon_after(self, pid: int, extra: int = 0) -> float:
        """Cumulative epsilon of client ``pid`` after its releases so far (+ ``extra`` more)."""
        return self.epsilon_for(self.releases.get(pid, 0) + extra)

    def record_release(self, pid: int) -> None:
        self.releases[pid] = self.releases.get(pid, 0) + 1

    def would_exceed(self, pids: list[int]) -> bool:
        limit = self.cfg.max_epsilon
        return limit > 0 and any(self.epsilon_after(pid, extra=1) > limit for pid in pids)


def run_ledger(cfg) -> PrivacyLedger | None:
    """A run's accounting: when noised predictions (transfer-set or per-class) are released."""
    if cfg.privacy.mechanism == "none" or not run_plan(cfg).algorithm.card.noisable:
        return None
    return PrivacyLedger(cfg.privacy, release_rows(cfg))


def release_rows(cfg) -> int:
    """Rows in one client release: the transfer set, the algorithm's per-round subset, or the
    classes (per-class uploads of the data-free family)."""
    return knowledge_rows(cfg)
