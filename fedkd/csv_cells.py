"""How a value is written into any fedkd CSV (runs.csv, summary.csv, rounds.csv, clients.csv).

Numbers at their precision: a whole number as an integer (676, not 676.0), any other float to
CSV_DIGITS significant digits, so binary noise (0.32999999999999996) never reaches a
spreadsheet; full precision stays in the JSON files. Light on purpose: reports import it
without torch.
"""

from __future__ import annotations

import math
from typing import Any

CSV_DIGITS = 12  # significant digits of a float that is not a whole number


def cell(value: Any) -> str:
    """CSV text of one value; booleans as true/false, missing or non-finite as ''."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else f"{value:.{CSV_DIGITS}g}"
    return str(value)
