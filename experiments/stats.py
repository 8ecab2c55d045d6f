"""Statistics over seeds for sweep reports: confidence intervals, paired tests, equivalence
tests, Holm's correction.

Pure numpy/scipy. A "paired" comparison matches two methods run on the same cell with the same
seed, so both saw the same split, the same transfer set and the same initial models; the
test is a paired t-test on the per-seed differences and the interval its 95% t-interval. A
difference test that fails to reject says nothing about equality; the equivalence test (two
one-sided tests, TOST) is what may conclude "equal within a margin".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # family-wise error rate that Holm's procedure controls


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the 95% t-interval (nan where n < 2)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return (float(arr.mean()) if arr.size else math.nan), math.nan, math.nan
    std = float(arr.std(ddof=1))
    return (
        float(arr.mean()),
        std,
        float(stats.t.ppf(0.5 + LEVEL / 2, arr.size - 1) * std / math.sqrt(arr.size)),
    )


@dataclass(frozen=True)
class Paired:
    n: int  # seeds present for both methods
    mean_diff: float  # mean of (a - b)
    ci_half: float  # half-width of the 95% t-interval of the mean difference
    p: float  # two-sided paired t-test; 1.0 when every difference is 0
    wins: int  # seeds where a > b
    losses: int  # seeds where a < b
    p_equiv: float = math.nan  # TOST p-value for |mean difference| < margin; nan without a margin


def _no_spread(std: float, mean: float) -> bool:
    """Every seed differs by the same amount (a t statistic would divide by zero)."""
    return std <= 1e-12 * max(1.0, abs(mean))


def paired(a: list[float], b: list[float], margin: float | None = None) -> Paired:
    """a, b: per-seed values in matching order; ``margin`` > 0 adds the equivalence test."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, std, half = mean_ci(list(diff))
    if diff.size < 2:
        p = math.nan
    elif _no_spread(std, mean):
        p = 1.0 if abs(mean) <= 1e-12 else math.nan  # identical runs, or untestable (no spread)
    else:
        p = float(stats.ttest_1samp(diff, 0.0).pvalue)
    p_equiv = tost(list(diff), margin) if margin is not None else math.nan
    return Paired(int(diff.size), mean, half, p, int((diff > 0).sum()), int((diff < 0).sum()), p_equiv)


def tost(diff: list[float], margin: float) -> float:
    """Two one-sided paired t-tests of H0: mean difference <= -margin and H0: >= +margin; the
    p-value of "equivalent within +-margin" is the larger of the two (Schuirmann 1987).
    Identical runs (every difference 0) are equivalent (p = 0); a constant non-zero difference
    has no spread to test (nan), as in ``paired``."""
    arr = np.asarray(diff, dtype=np.float64)
    if arr.size < 2:
        return math.nan
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    if _no_spread(std, mean):
        return 0.0 if abs(mean) <= 1e-12 else math.nan
    se, df = std / math.sqrt(arr.size), arr.size - 1
    p_above_lower = float(stats.t.sf((mean + margin) / se, df))  # rejects mean <= -margin
    p_below_upper = float(stats.t.cdf((mean - margin) / se, df))  # rejects mean >= +margin
    return max(p_above_lower, p_below_upper)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1; nan stays nan)."""
    p = np.asarray(pvalues, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, math.nan)
    m = finite.size
    running = 0.0
    for rank, idx in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return [float(v) for v in adjusted]
