"""CSV numbers at their precision: whole numbers as integers, no binary noise, full precision
left to the JSON files."""

from __future__ import annotations

import csv
import math

from hypothesis import given
from hypothesis import strategies as st

from experiments.sweep_report import write_report
from fedkd.csv_cells import cell
from tests.test_report import _sweep, _write_run


def _significant(text: str) -> int:
    """Significant digits of a number written in CSV."""
    return len(text.lstrip("-").split("e")[0].replace(".", "").lstrip("0").rstrip("0") or "0")


def test_cells_of_known_values():
    assert cell(0.1 + 0.23) == "0.33"  # 0.33000000000000002 in full
    assert cell(676.0) == "676" and cell(12) == "12" and cell(-3.0) == "-3"
    assert cell(True) == "true" and cell(None) == "" and cell(math.nan) == "" and cell(math.inf) == ""
    assert cell(1e-5) == "1e-05" and cell("knfu") == "knfu"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_reads_back_to_twelve_significant_digits(value):
    text = cell(value)
    assert math.isclose(float(text), value, rel_tol=1e-11, abs_tol=0.0)
    if value.is_integer() and abs(value) < 2**53:
        assert text == str(int(value))  # exact
    else:
        assert _significant(text) <= 12  # never repr's noise tail


def test_report_csvs_hold_no_float_noise_and_counts_as_integers(tmp_path):
    rows = [_write_run(tmp_path, alg, seed) for alg in ("local", "knfu") for seed in (0, 1, 2)]
    write_report(_sweep(tmp_path, rows))
    for name in ("runs.csv", "summary.csv"):
        with open(tmp_path / name) as handle:
            table = list(csv.DictReader(handle))
        numbers = [v for row in table for v in row.values() if v and v[0].isdigit()]
        assert numbers and all(_significant(v) <= 12 for v in numbers), name
        assert not any(v.endswith(".0") for v in numbers), name
    with open(tmp_path / "runs.csv") as handle:
        first = next(csv.DictReader(handle))
    assert first["private_steps"] == "12" and first["transfer_steps"] == "6"
