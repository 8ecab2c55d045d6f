"""Statistics the report computes: golden values for Holm, paired tests, CIs and the tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import holm, mean_ci, paired, tost
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


def _t2_cdf(t: float) -> float:
    """Student's t CDF with 2 degrees of freedom, in closed form: 1/2 + t / (2 sqrt(2 + t^2))."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def test_tost_golden_value_by_the_formula():
    # 3 seeds: mean 0.002, sd 0.01, se 0.01/sqrt(3), df 2; margin 0.01
    diff = [0.002, 0.012, -0.008]
    se = 0.01 / math.sqrt(3)
    p_lower = 1 - _t2_cdf((0.002 + 0.01) / se)  # H0: mean <= -0.01, t = 1.2 sqrt(3)
    p_upper = _t2_cdf((0.002 - 0.01) / se)  # H0: mean >= +0.01, t = -0.8 sqrt(3)
    assert p_upper > p_lower  # the mean lies nearer the upper margin: that side decides
    assert tost(diff, 0.01) == pytest.approx(max(p_lower, p_upper), rel=1e-12)
    assert tost([0.0, 0.01, -0.01], 0.01) == pytest.approx(0.5 - math.sqrt(3) / (2 * math.sqrt(5)))
    # the same as two one-sided one-sample t-tests against -margin and +margin
    one_sided = max(
        stats.ttest_1samp(diff, -0.01, alternative="greater").pvalue,
        stats.ttest_1samp(diff, 0.01, alternative="less").pvalue,
    )
    assert tost(diff, 0.01) == pytest.approx(one_sided)


def test_tost_edge_cases_and_paired_with_a_margin():
    assert tost([0.0, 0.0, 0.0], 0.01) == 0.0  # identical runs: equivalent
    assert math.isnan(tost([0.02, 0.02], 0.01))  # the same gap on every seed: no spread to test
    assert math.isnan(tost([0.001], 0.01))  # one seed: no test
    assert tost([0.05, 0.06, 0.04], 0.01) > 0.9  # clearly outside the margin
    a, b = [0.90, 0.92, 0.88, 0.91, 0.95], [0.899, 0.921, 0.881, 0.908, 0.951]
    result = paired(a, b, margin=0.01)
    assert result.p_equiv == pytest.approx(tost(list(np.subtract(a, b)), 0.01)) and result.p_equiv < 0.001
    assert math.isnan(paired(a, b).p_equiv)  # no margin: no equivalence test


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


TIGHT = [v + n / 20 for v, n in zip(CLEAR, NOISE, strict=True)]  # within 0.001 of CLEAR on every seed
WILD = [v + 3 * n for v, n in zip(CLEAR, NOISE, strict=True)]  # up to 0.06 either way


def test_verdicts_say_higher_equivalent_or_inconclusive():
    cells = {("0.1", "local"): CLEAR, ("0.1", "knfu"): BETTER, ("0.5", "local"): CLEAR}
    cells |= {("0.5", "knfu"): TIGHT, ("5", "local"): CLEAR, ("5", "knfu"): WILD}
    rows = comparisons(_table(cells), ["algorithm"], "local", margin=0.01)
    assert [r["verdict"] for r in rows] == ["higher", "equivalent within ±0.01", "inconclusive"]
    raw = [r["test"].p_equiv for r in rows]
    assert [r["p_equiv_holm"] for r in rows] == pytest.approx(holm(raw))  # a family of its own
    # a margin narrower than the noise cannot conclude equivalence
    narrow = comparisons(_table(cells), ["algorithm"], "local", margin=0.0001)
    assert narrow[1]["verdict"] == "inconclusive"
    text = results_tables(_table(cells), ["algorithm"], "local", margin=0.01)
    assert "| p (Holm) | p equiv (Holm) | verdict |" in text
    assert "margin 1 accuracy point)" in text and "equivalence tests as a second family" in text
    assert "| 0.5 | knfu |" in text and "| equivalent within ±0.01 |" in text


def test_a_failed_run_is_counted_in_its_cell_and_left_out_of_the_mean():
    table = _table({("0.1", "local"): CLEAR, ("0.1", "knfu"): BETTER})
    failed = {**table.records[0], "seed": 9, "alma": math.nan, "status": "failed"}
    with_failure = RunTable(table.axes, [*table.records, failed])
    again = read_runs_csv(write_runs_csv(with_failure))  # the status survives runs.csv
    text = pivot_markdown(again, ["algorithm"], "local")
    assert "| 0.1 | 6 (1 failed) |" in text
    assert pivot_markdown(table, ["algorithm"], "local").split("\n")[2].startswith("| 0.1 | 6 |")
    mean = f"{np.mean(CLEAR):.3f}"
    assert f"| {mean} ± " in text  # the mean is over the 6 finished seeds


def _new_table(base: dict[tuple[str, str], list[float]], steps: bool) -> RunTable:
    """Runs that record the matched ALMA (own split 0.1 lower), validation and, if asked, steps."""
    table = _table(base)
    for record in table.records:
        record |= {"alma_matched": record["alma"], "alma_matched_se": 0.005, "global_acc": 0.7}
        record["alma"] -= 0.1
        record |= {
            "val_round": 3.0,
            "alma_matched_at_val": record["alma_matched"] - 0.02,
            "global_at_val": 0.6,
        }
        if steps:
            private = 30.0 if record["algorithm"] == "local" else 20.0
            record |= {"private_steps": private, "transfer_steps": 40.0 - private, "server_steps": 0.0}
    return table


def test_the_headline_is_the_matched_alma_with_global_accuracy_beside_it():
    cells = {("0.1", "local"): CLEAR, ("0.1", "knfu"): BETTER}
    text = results_tables(_new_table(cells, steps=True), ["algorithm"], "local", margin=0.01)
    head, val_pivot, steps = text.split("\n\n")[1], text.split("\n\n")[3], text.split("\n\n")[5]
    assert "drawn with its own training label mix" in text.split("\n\n")[0]
    assert f"| {np.mean(CLEAR):.3f} ± " in head and " (0.700) |" in head  # matched, global beside
    assert f"{np.mean(CLEAR) - 0.1:.3f}" not in head  # not the own split
    assert f"| {np.mean(CLEAR) - 0.02:.3f} ± " in val_pivot and " (0.600) |" in val_pivot
    assert "| 0.1 | 30.0 + 10.0 | 20.0 + 20.0 |" in steps
    without = results_tables(_new_table(cells, steps=False), ["algorithm"], "local", margin=0.01)
    assert "Optimiser steps" not in without and "Optimiser steps" in text


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
