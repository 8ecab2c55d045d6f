"""KuLSIF density-ratio estimation (Kanamori, Suzuki & Sugiyama 2012), closed form.

Estimates r(x) = p(x) / q(x) from m samples of p (the numerator) and n samples of q (the
denominator) with a Gaussian kernel k(a, b) = exp(-||a - b||^2 / (2 width^2)). Minimising
(1 / 2n) sum_i r(q_i)^2 - (1 / m) sum_j r(p_j) + (lam / 2) ||r||^2 over the kernel's RKHS gives

    r(x) = sum_i alpha_i k(x, q_i) + 1 / (m lam) sum_j k(x, p_j),
    alpha = -(K_qq / n + lam I)^-1 K_qp 1_m / (n m lam),

one symmetric positive-definite solve of size n: no iterations, no randomness. Selective-FD's
reference code (github.com/shaojiawei07/Selective-FD, KuLSIF.py) uses this estimator with
lam = n^-1/2; its ``_compute_alpha_vector`` multiplies by the matrix where the formula inverts it
(``np.dot(LHS_matrix, ...)``), which its uniform auxiliary samples make immaterial (there the
kernel matrices are nearly the identity and zero); here the formula is solved as written.

The ``densratio`` package implements uLSIF/RuLSIF with randomly drawn kernel centres and a
cross-validated width; KuLSIF's closed form is short enough to keep exact and deterministic here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve
from scipy.spatial.distance import cdist

_BLOCK = 1024  # numerator rows per kernel block in leave_one_out: bounds memory at _BLOCK x m floats


def gaussian_kernel(a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
    """(A, D), (B, D) -> (A, B): exp(-||a - b||^2 / (2 width^2))."""
    return np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * width**2))


@dataclass(frozen=True)
class KuLSIF:
    numerator: np.ndarray  # (m, D) samples of p
    denominator: np.ndarray  # (n, D) samples of q
    width: float  # Gaussian kernel width, in the samples' units
    lam: float  # regularisation strength
    solved: np.ndarray  # (n, m): (K_qq / n + lam I)^-1 K_qp, shared by the fit and its leave-one-out refits

    @classmethod
    def fit(
        cls, numerator: np.ndarray, denominator: np.ndarray, width: float, lam: float | None = None
    ) -> KuLSIF:
        """lam: None = n^-1/2, the reference code's choice (n = denominator samples)."""
        n = len(denominator)
        lam = n**-0.5 if lam is None else lam
        k_qq = gaussian_kernel(denominator, denominator, width)  # (n, n)
        k_qp = gaussian_kernel(denominator, numerator, width)  # (n, m)
        solved = solve(k_qq / n + lam * np.eye(n), k_qp, assume_a="pos")  # (n, m)
        return cls(numerator, denominator, width, lam, solved)

    @property
    def alpha(self) -> np.ndarray:
        """(n,): the denominator samples' coefficients."""
        n, m = self.solved.shape
        return -self.solved.sum(axis=1) / (n * m * self.lam)

    def ratio(self, x: np.ndarray) -> np.ndarray:
        """(Q, D) -> (Q,): estimated p(x) / q(x)."""
        m = len(self.numerator)
        positive = gaussian_kernel(x, self.numerator, self.width).sum(axis=1) / (m * self.lam)
        return gaussian_kernel(x, self.denominator, self.width) @ self.alpha + positive

    def leave_one_out(self) -> np.ndarray:
        """(m,): r_{-j}(p_j), each numerator sample scored by the estimator fitted without it
        (exact: alpha is linear in the numerator's kernel sums, so one solve serves every refit)."""
        n, m = self.solved.shape
        k_qp = gaussian_kernel(self.denominator, self.numerator, self.width)  # (n, m)
        alphas = -(self.solved.sum(axis=1, keepdims=True) - self.solved) / (n * (m - 1) * self.lam)  # (n, m)
        negative = (k_qp * alphas).sum(axis=0)  # (m,): sum_i alpha_{-j, i} k(p_j, q_i)
        others = (
            np.concatenate(  # (m,): sum_{l != j} k(p_j, p_l), in blocks of rows to bound memory
                [
                    gaussian_kernel(self.numerator[start : start + _BLOCK], self.numerator, self.width).sum(
                        axis=1
                    )
                    for start in range(0, m, _BLOCK)
                ]
            )
            - 1.0
        )  # k(p_j, p_j) = 1
        return negative + others / ((m - 1) * self.lam)
