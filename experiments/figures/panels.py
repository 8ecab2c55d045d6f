"""Grouping a sweep's runs for figures: by algorithm, into panels, into per-round curves."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from experiments.figures.common import Style
from experiments.stats import mean_ci

Row = dict[str, Any]  # one line of runs.jsonl with its "history" (results and rounds)
MAX_PANELS = 12


def algorithm_of(row: Row) -> str:
    return row["axes"].get("algorithm", row["config"]["algorithm"])


def algorithms(rows: list[Row]) -> list[str]:
    return sorted({algorithm_of(r) for r in rows})


def numeric_axes(rows: list[Row], axes: list[str]) -> list[str]:
    """Axes (not seed or algorithm) with several numeric values: each gets a final-vs-axis plot."""
    found = []
    for axis in axes:
        values = {r["axes"].get(axis) for r in rows}
        if (
            axis not in ("seed", "algorithm")
            and len(values) > 1
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            found.append(axis)
    return found


def panels(rows: list[Row], axes: list[str], exclude: tuple[str, ...]) -> dict[tuple, list[Row]]:
    """Rows grouped by every axis except the excluded ones (one subplot each, at most 12)."""
    keys = [a for a in axes if a not in exclude]
    grouped: dict[tuple, list[Row]] = {}
    for row in rows:
        grouped.setdefault(tuple((k, row["axes"].get(k)) for k in keys), []).append(row)
    return dict(list(sorted(grouped.items(), key=lambda kv: str(kv[0])))[:MAX_PANELS])


def grid(n: int) -> tuple[Figure, list[Axes]]:
    """Up to three panels a row; unused cells hidden."""
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axs = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), dpi=110, squeeze=False)
    for ax in axs.flat[n:]:
        ax.axis("off")
    return fig, list(axs.flat)


def panel_title(key: tuple) -> str:
    """The setting a panel shows (``alpha=0.1``); empty for the one panel of a figure without
    panels, which gets no title (the caption is the paper's)."""
    return ", ".join(f"{k}={v}" for k, v in key)


def label_panel(ax: Axes, key: tuple) -> None:
    """Name the panel's setting above it, small, where there is one."""
    if key:
        ax.set_title(panel_title(key), fontsize=9)


def round_matrix(
    runs: list[list[Row]], value: Callable[[Row], float | None]
) -> tuple[np.ndarray, np.ndarray]:
    """(rounds,) and (runs, rounds) of ``value(round record)``; NaN where a run has no such round
    (it stopped early at max-epsilon, or that round was not evaluated)."""
    rounds = np.array(sorted({x["round"] for run in runs for x in run}))
    matrix = np.full((len(runs), len(rounds)), np.nan)
    for i, run in enumerate(runs):
        for x in run:
            v = value(x)
            matrix[i, np.searchsorted(rounds, x["round"])] = np.nan if v is None else v
    return rounds, matrix


def nan_mean_std(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value at all: NaN
        return np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0)


def headline_key(rows: list[Row]) -> str:
    """The headline ALMA of the rounds, as in the tables (experiments/run_records.headline):
    label-mix-matched once any run records it, else own-split."""
    rounds = (x for r in rows for x in r.get("history", {}).get("rounds", []))  # a row may carry only final
    matched = any(x.get("alma_matched") is not None for x in rounds)
    return "alma_matched" if matched else "alma"


def final_value(row: Row, key: str) -> float:
    """``key`` at the run's final evaluated round: the number the tables average (as
    experiments/run_records.run_record reads it: ``alma`` from the run's final record)."""
    if key == "alma":
        return float(row["final"]["alma"])
    evaluated = [x for x in row["history"]["rounds"] if x.get("evaluated", True)]
    final_round = row.get("final", {}).get("round")
    last = next((x for x in reversed(evaluated) if x.get("round") == final_round), evaluated[-1])
    value = last.get(key)
    return float("nan") if value is None else float(value)


def final_alma_errorbar(
    ax: Axes, rows: list[Row], x_of: Callable[[Row], float], label: str, style: Style
) -> None:
    """Mean and 95% t-interval over seeds of the final headline ALMA at each x (x_of(row) gives a
    run's x): the numbers and intervals of the report's tables."""
    key = headline_key(rows)
    xs = sorted({x_of(r) for r in rows})
    stats = [mean_ci([final_value(r, key) for r in rows if x_of(r) == x]) for x in xs]
    ax.errorbar(
        xs,
        [s[0] for s in stats],
        yerr=[0.0 if np.isnan(s[2]) else s[2] for s in stats],
        capsize=3,
        label=label,
        **style.line(),
    )
