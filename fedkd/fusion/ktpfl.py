"""KT-pFL (Zhang et al., NeurIPS 2021): a learned knowledge-coefficient matrix personalises targets.

The server keeps C (K x K, row k on the simplex: how much client k learns from each client j),
uniform at the start. Each round, with the clients' soft predictions p_j on the transfer set,
target_k = sum_j c_kj p_j, and C takes ``ktpfl-steps`` projected gradient steps of size
``ktpfl-step-size`` on the paper's objective for C,

    J(C) = mean_n sum_k KL(target_kn || p_kn) + rho * ||C - 1/K||_F^2,

(the distillation term between each client's prediction and its personalised target, and the
regulariser that pulls C towards uniform), then targets are made with the updated C. Our C lives
on the simplex (each step is followed by a Euclidean projection of every row), so targets stay
probability vectors; the paper's lambda is folded into the step size and rho. C is recorded as the
round's weight matrix, like KnFu's neighbour weights. See docs/design.md (fidelity table).
"""

from __future__ import annotations

import numpy as np

from fedkd.config import ExperimentConfig, FusionConfig
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult, ServerState, mix
from fedkd.knowledge import project_to_simplex

_EPS = 1e-12
COEFFICIENTS = "coefficients"  # ServerState key: the (K, K) matrix over all partition ids


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


def update_coefficients(c: np.ndarray, preds: np.ndarray, cfg: FusionConfig) -> np.ndarray:
    """``ktpfl-steps`` projected gradient steps on J: (K, K) -> (K, K), rows on the simplex."""
    for _ in range(cfg.ktpfl_steps):
        c = project_to_simplex(c - cfg.ktpfl_step_size * coefficient_gradient(c, preds, cfg.ktpfl_rho))
    return c


class KTpFL(FusionAlgorithm):
    uploads = "predictions"
    personalised = True
    paper = "Zhang et al. 2021, KT-pFL (NeurIPS, arXiv 2111.02862)"
    settings = ("ktpfl-step-size", "ktpfl-rho", "ktpfl-steps")

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
