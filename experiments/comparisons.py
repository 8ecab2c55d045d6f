"""Grouping a sweep's runs into cells and methods, and the paired tests between methods.

A *cell* is one combination of the non-seed axes that are not columns; a *method* is one
combination of the column axes (default: the algorithm). Per cell, each method is compared with
a reference, paired by seed (same split, transfer set and initial models): a paired t-test
Holm-adjusted over the table, and with a margin, an equivalence test (TOST) Holm-adjusted as a
second family, so that a verdict says "higher", "lower", "equivalent within ±m" or
"inconclusive", never "equal" from a test that failed to find a difference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from experiments.run_records import FAILED, RunTable, headline
from experiments.stats import ALPHA, Paired, holm, paired
from fedkd.errors import ConfigError


# -- grouping ------------------------------------------------------------------------------------
def method_labeller(table: RunTable, columns: list[str]):
    """record -> ``knfu``, or ``knfu (include-self=false)`` where a further column axis takes
    more than one value for that algorithm (a value it never varies in is left out)."""
    missing = [c for c in columns if c not in table.axes]
    if missing:
        raise ConfigError(f"column axis {missing[0]!r} is not an axis of this sweep; allowed: {table.axes}")
    head, rest = columns[0], columns[1:]
    varied: dict[str, list[str]] = defaultdict(list)
    for axis in rest:
        for value in {r[head] for r in table.records}:
            if len({r[axis] for r in table.records if r[head] == value}) > 1:
                varied[value].append(axis)

    def label(record: dict[str, Any]) -> str:
        extra = [f"{a}={record[a]}" for a in varied[record[head]]]
        return f"{record[head]} ({', '.join(extra)})" if extra else record[head]

    return label


def axis_order(values: list[str]) -> list[str]:
    """Numeric values by size, others alphabetically: never the order runs happened to finish."""
    unique = sorted(set(values))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def sorted_by_axes(keys, table: RunTable, axes: list[str]) -> list[tuple]:
    """Tuples of axis values (one per axis in ``axes``), in each axis's order."""
    orders = [axis_order([r[a] for r in table.records]) for a in axes]
    return sorted(keys, key=lambda key: [o.index(v) for o, v in zip(orders, key, strict=True)])


def grouped(
    table: RunTable, columns: list[str], key: str | None = None
) -> tuple[list[str], dict[tuple, dict[str, dict[int, float]]]]:
    """-> (cell axes, {cell: {method: {seed: value of ``key``}}}) over the finished runs; ``key``:
    the headline ALMA unless given."""
    key = key or headline(table)
    label = method_labeller(table, columns)
    cell_axes = [a for a in table.axes if a not in columns]
    cells: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in table.records:
        if record.get("status") != FAILED:  # failed runs: counted by failed_per_cell
            cell = tuple(record[a] for a in cell_axes)
            cells[cell][label(record)][record["seed"]] = record.get(key, math.nan)
    return cell_axes, {cell: cells[cell] for cell in sorted_by_axes(cells, table, cell_axes)}


def failed_per_cell(table: RunTable, columns: list[str]) -> dict[tuple, int]:
    """Failed runs per cell (only cells with any)."""
    cell_axes = [a for a in table.axes if a not in columns]
    counts: dict[tuple, int] = defaultdict(int)
    for record in table.records:
        if record.get("status") == FAILED:
            counts[tuple(record[a] for a in cell_axes)] += 1
    return dict(counts)


def methods_of(table: RunTable, columns: list[str], first: str | None = None) -> list[str]:
    """Method labels, alphabetically, with ``first`` (the reference, when present) in front."""
    label = method_labeller(table, columns)
    methods = sorted({label(r) for r in table.records})
    if first is not None:
        lead = [m for m in methods if m == first or m.startswith(first + " ")][:1]
        methods = lead + [m for m in methods if m not in lead]
    return methods


def resolve_reference(reference: str, methods: list[str]) -> str:
    if reference in methods:
        return reference
    matches = [m for m in methods if m.startswith(reference + " ") or m.startswith(reference + "(")]
    if len(matches) != 1:
        raise ConfigError(f"reference {reference!r} names no single method; allowed: {', '.join(methods)}")
    return matches[0]


def finite(values: dict[int, float]) -> dict[int, float]:
    return {seed: v for seed, v in values.items() if math.isfinite(v)}


def pair(a: dict[int, float], b: dict[int, float], margin: float | None = None) -> Paired:
    """Paired over the seeds both have a finite value for."""
    a, b = finite(a), finite(b)
    seeds = sorted(set(a) & set(b))
    return paired([a[s] for s in seeds], [b[s] for s in seeds], margin)


# -- comparisons ---------------------------------------------------------------------------------
def comparisons(
    table: RunTable, columns: list[str], reference: str, margin: float | None = None
) -> list[dict[str, Any]]:
    """Every method vs the reference in every cell, Holm-adjusted over the whole family; with a
    ``margin``, also the equivalence tests (TOST), Holm-adjusted as a second family."""
    cell_axes, cells = grouped(table, columns)
    methods = methods_of(table, columns)
    reference = resolve_reference(reference, methods)
    out = []
    for cell, by_method in cells.items():
        if reference not in by_method:
            continue
        for method in methods:
            if method != reference and method in by_method:
                result = pair(by_method[method], by_method[reference], margin)
                out.append(
                    {
                        "cell": dict(zip(cell_axes, cell, strict=True)),
                        "method": method,
                        "reference": reference,
                        "test": result,
                    }
                )
    differ, equal = holm([r["test"].p for r in out]), holm([r["test"].p_equiv for r in out])
    for row, p_holm, p_equiv_holm in zip(out, differ, equal, strict=True):
        row["p_holm"], row["p_equiv_holm"] = p_holm, p_equiv_holm
        row["verdict"] = verdict(row["test"].mean_diff, p_holm, p_equiv_holm, margin)
    return out


def verdict(
    mean_diff: float, p_holm: float, p_equiv_holm: float = math.nan, margin: float | None = None
) -> str:
    """ "higher"/"lower" where the difference is significant (it wins over an equivalence that
    also holds: a real difference smaller than the margin); else "equivalent within ±m" where
    the equivalence test rejects; else "inconclusive" (without a margin: the older wording,
    "no significant difference")."""
    if math.isfinite(p_holm) and p_holm < ALPHA:
        return "higher" if mean_diff > 0 else "lower"
    if margin is None:
        return "no significant difference"
    if math.isfinite(p_equiv_holm) and p_equiv_holm < ALPHA:
        return f"equivalent within ±{margin:g}"
    return "inconclusive"


def significantly_best(cells: dict[tuple, dict[str, dict[int, float]]]) -> dict[tuple, str | None]:
    """Per cell, the top method if it beats every other method of the cell (paired,
    Holm-adjusted over all these tests across the table), else None."""
    tests: list[tuple[tuple, Paired]] = []
    tops: dict[tuple, str] = {}
    for cell, by_method in cells.items():
        means = {m: float(np.mean(list(finite(v).values()) or [math.nan])) for m, v in by_method.items()}
        means = {m: v for m, v in means.items() if math.isfinite(v)}
        if not means:
            continue
        tops[cell] = max(means, key=lambda m: means[m])
        tests += [
            (cell, pair(by_method[tops[cell]], seeds)) for m, seeds in by_method.items() if m != tops[cell]
        ]
    adjusted = holm([t.p for _, t in tests])
    beaten: dict[tuple, bool] = {cell: cell in tops for cell in cells}
    for (cell, test), p in zip(tests, adjusted, strict=True):
        if not (test.mean_diff > 0 and math.isfinite(p) and p < ALPHA):
            beaten[cell] = False
    return {cell: tops[cell] if beaten[cell] and len(cells[cell]) > 1 else None for cell in cells}
