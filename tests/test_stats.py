"""Statistics the report computes: golden values for Holm, paired tests, CIs and the tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import holm, mean_ci, paired
from experiments.tables import (
    RunTable,
    comparisons,
    grouped,
    pivot_markdown,
    read_runs_csv,
    results_tables,
    significantly_best,
    write_runs_csv,
)


def test_holm_golden_values():
    # sorted p: 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> monotone step-down: 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, math.nan])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])  # nan is not counted


def test_paired_matches_scipy_and_its_interval_covers_the_mean_difference():
    a = [0.90, 0.92, 0.88, 0.91, 0.95]
    b = [0.85, 0.91, 0.86, 0.90, 0.90]
    result = paired(a, b)
    assert result.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    diff = np.subtract(a, b)
    half = stats.t.ppf(0.975, 4) * diff.std(ddof=1) / math.sqrt(5)
    assert result.mean_diff == pytest.approx(diff.mean()) and result.ci_half == pytest.approx(half)
    assert (result.wins, result.losses, result.n) == (5, 0, 5)
    assert paired([0.5, 0.6], [0.5, 0.6]).p == 1.0  # identical runs: no difference, not nan
    assert math.isnan(paired([0.9, 0.8], [0.8, 0.7]).p)  # the same gain on every seed: no spread to test


def test_mean_ci_golden():
    mean, std, half = mean_ci([1.0, 2.0, 3.0])
    assert (mean, std) == pytest.approx((2.0, 1.0))
    assert half == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, 2) / sqrt(3)
    assert math.isnan(mean_ci([1.0])[2])


def _table(values: dict[tuple[str, str], list[float]]) -> RunTable:
    records = []
    for (alpha, algorithm), almas in values.items():
        for seed, alma in enumerate(almas):
            records.append(
                {
                    "alpha": alpha,
                    "algorithm": algorithm,
                    "seed": seed,
                    "alma": alma,
                    "alma_se": 0.01,
                    "global_acc": 0.5,
                    "self_weight": math.nan,
                }
            )
    return RunTable(["alpha", "algorithm"], records)


CLEAR = [0.80, 0.81, 0.79, 0.80, 0.82, 0.81]
NOISE = [0.01, -0.01, 0.02, -0.02, 0.0, 0.01]
BETTER = [v + 0.05 + n / 10 for v, n in zip(CLEAR, NOISE, strict=True)]  # clearly above CLEAR
ALIKE = [v + n for v, n in zip(CLEAR, NOISE, strict=True)]  # indistinguishable from CLEAR
TWO_CELLS = {("0.1", "local"): CLEAR, ("0.1", "knfu"): BETTER, ("5", "local"): CLEAR, ("5", "knfu"): ALIKE}


def test_best_is_marked_only_where_significantly_best():
    table = _table(TWO_CELLS)
    _, cells = grouped(table, ["algorithm"])
    best = significantly_best(cells)
    assert best[("0.1",)] == "knfu" and best[("5",)] is None
    text = pivot_markdown(table, ["algorithm"])
    assert text.count("**") == 2  # one bold entry


def test_comparisons_are_per_cell_holm_adjusted_and_worded():
    table = _table(TWO_CELLS)
    rows = comparisons(table, ["algorithm"], "local")
    assert [r["cell"]["alpha"] for r in rows] == ["0.1", "5"]
    assert rows[0]["verdict"] == "higher" and rows[1]["verdict"] == "no significant difference"
    raw = [r["test"].p for r in rows]
    assert [r["p_holm"] for r in rows] == pytest.approx(holm(raw))
    assert rows[0]["p_holm"] >= raw[0]  # adjustment never lowers a p-value


def test_tables_survive_the_csv_round_trip():
    table = _table({("0.1", "local"): CLEAR, ("0.1", "knfu"): NOISE})
    again = read_runs_csv(write_runs_csv(table))
    assert results_tables(again, ["algorithm"], "local") == results_tables(table, ["algorithm"], "local")


def test_a_failed_seed_is_left_out_not_poisoning_the_cell():
    values = dict(TWO_CELLS)
    values[("0.1", "knfu")] = [math.nan, *BETTER[1:]]
    rows = comparisons(_table(values), ["algorithm"], "local")
    assert rows[0]["test"].n == len(BETTER) - 1 and math.isfinite(rows[0]["p_holm"])
    assert "nan" not in pivot_markdown(_table(values), ["algorithm"])


def test_tables_do_not_depend_on_the_order_runs_finished():
    table = _table(TWO_CELLS)
    shuffled = RunTable(table.axes, list(reversed(table.records)))
    assert results_tables(shuffled, ["algorithm"], "local") == results_tables(table, ["algorithm"], "local")
    assert "| alpha | seeds | local | knfu |" in results_tables(shuffled, ["algorithm"], "local")
