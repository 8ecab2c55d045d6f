"""KT-pFL (Zhang et al., NeurIPS 2021): a learned knowledge-coefficient matrix personalises targets.

The server keeps C (K x K, row k on the simplex: how much client k learns from each client j),
uniform at the start. Each round, with the clients' soft predictions p_j on the transfer set,
target_k = sum_j c_kj p_j, and C takes ``ktpfl-steps`` gradient steps on the paper's objective

    J(C) = mean_n sum_k KL(target_kn || p_kn) + rho * ||C - 1/K||_F^2,

(the distillation term between each client's prediction and its personalised target, and the
regulariser that pulls C towards uniform), then targets are made with the updated C. The step
follows the reference code (github.com/cugzj/KT-pFL, engine_kt_pfl.py ``get_models_logits``) by
default: each row's step size is a power of 5 chosen so that the row's mean absolute step lies in
[0.01, 0.05) (``adaptive_step_size``; taken on the row-centred gradient, see there), and each row
then returns to the simplex as softmax(5 c) (``ktpfl-simplex`` softmax). Knowledge is exchanged
at the reference's T = 10. ``ktpfl-step-rule`` fixed with ``ktpfl-simplex`` projection gives the
earlier rule (a fixed step ``ktpfl-step-size``, then a Euclidean projection of every row onto the
simplex). The paper's lambda is folded into the step; C is recorded as the round's weight matrix,
like KnFu's neighbour weights. See docs/design.md (fidelity table).
"""

from __future__ import annotations

import numpy as np

from fedkd.config import ExperimentConfig, FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult, ServerState, mix
from fedkd.fusion_cards import CARDS
from fedkd.knowledge import project_to_simplex, softmax

_EPS = 1e-12
COEFFICIENTS = "coefficients"  # ServerState key: the (K, K) matrix over all partition ids
STEP_RULES = ("adaptive", "fixed")  # ktpfl-step-rule
SIMPLEX_MAPS = ("softmax", "projection")  # ktpfl-simplex
SOFTMAX_SCALE = 5.0  # the reference code maps each row of C to softmax(5 c) after its step
REFERENCE_TEMPERATURE = 10.0  # the reference's Temp for uploads and distillation (its configs: 10)


def objective(c: np.ndarray, preds: np.ndarray, rho: float) -> float:
    """J(C) for c (K, K) and preds (K, N, C): mean over rows n of sum over clients k of
    KL(t_kn || p_kn), plus rho ||C - 1/K||^2."""
    k, n = preds.shape[:2]
    targets = np.clip(mix(preds, c), _EPS, None)  # (K, N, C)
    kl = (targets * (np.log(targets) - np.log(np.clip(preds, _EPS, None)))).sum() / n
    return float(kl + rho * ((c - 1.0 / k) ** 2).sum())


def coefficient_gradient(c: np.ndarray, preds: np.ndarray, rho: float) -> np.ndarray:
    """dJ/dC: (K, K). d/dc_kj of mean_n KL(t_kn || p_kn) = mean_n sum_c p_jnc (log t_knc - log p_knc + 1)."""
    k, n = preds.shape[:2]
    targets = mix(preds, c)  # (K, N, C)
    log_ratio = np.log(np.clip(targets, _EPS, None)) - np.log(np.clip(preds, _EPS, None))  # (K, N, C)
    distill = np.einsum("jnc,knc->kj", preds, log_ratio) / n + 1.0  # (K, K)
    return distill + 2.0 * rho * (c - 1.0 / k)


def adaptive_step_size(gradient: np.ndarray) -> float:
    """The reference code's step size for one row's gradient (K,), its loop as written: start at
    1; five times, divide by 5 if the mean absolute step is above 0.01, then multiply by 5 if it is
    below. The row's mean absolute step ends in [0.01, 0.05) unless the gradient's mean absolute
    value is more than 5^5 times outside that band."""
    mean_abs, step = float(np.abs(gradient).mean()), 1.0
    for _ in range(5):
        if mean_abs > 0.01:
            mean_abs, step = mean_abs / 5, step / 5
        if mean_abs < 0.01:
            mean_abs, step = mean_abs * 5, step * 5
    return step


def update_coefficients(c: np.ndarray, preds: np.ndarray, cfg: FusionConfig) -> np.ndarray:
    """``ktpfl-steps`` gradient steps on J: (K, K) -> (K, K), rows on the simplex. Adaptive steps
    are sized on the row-centred gradient: J's gradient carries +1 on every entry (from KL's
    t log t), which neither the softmax nor the projection sees but which would set the step size
    (the reference code's squared-error objective has no such constant)."""
    for _ in range(cfg.ktpfl_steps):
        grad = coefficient_gradient(c, preds, cfg.ktpfl_rho)  # (K, K)
        if cfg.ktpfl_step_rule == "adaptive":
            grad = grad - grad.mean(axis=1, keepdims=True)
            step = np.array([adaptive_step_size(row) for row in grad])[:, None]  # (K, 1)
        else:
            step = cfg.ktpfl_step_size
        c = c - step * grad
        c = softmax(SOFTMAX_SCALE * c) if cfg.ktpfl_simplex == "softmax" else project_to_simplex(c)
    return c


class KTpFL(FusionAlgorithm):
    card = CARDS["kt-pfl"]
    fixed_temperature = REFERENCE_TEMPERATURE

    def start(self, cfg: ExperimentConfig) -> ServerState:
        k = cfg.data.num_clients
        return {COEFFICIENTS: np.full((k, k), 1.0 / k)}

    def fuse_round(
        self, preds: np.ndarray, pids: list[int], state: ServerState, cfg: ExperimentConfig
    ) -> FusionResult:
        """Update the participants' block of C (rows renormalised over the participants; the mass a
        row keeps on clients absent this round stays as it was; a row with no mass on this round's
        participants starts uniform over them and keeps its stored zeros), then personalise."""
        full = state[COEFFICIENTS]  # (K_all, K_all)
        block = np.ix_(pids, pids)
        mass = full[block].sum(axis=1, keepdims=True)  # (K, 1)
        c = np.where(mass > 0, full[block] / np.where(mass > 0, mass, 1.0), 1.0 / len(pids))
        c = update_coefficients(c, preds, cfg.fusion)
        full[block] = c * mass
        state[COEFFICIENTS] = full
        return self._result(preds, c)

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        """One round from a uniform C (no run state)."""
        k = preds.shape[0]
        return self._result(preds, update_coefficients(np.full((k, k), 1.0 / k), preds, cfg))

    @staticmethod
    def _result(preds: np.ndarray, c: np.ndarray) -> FusionResult:
        targets = mix(preds, c)  # (K, N, C)
        return FusionResult(targets=list(targets), weights=c)


FUSIONS.register("kt-pfl")(KTpFL())
