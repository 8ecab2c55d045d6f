"""Result tables of a sweep, computed from one flat table of finished runs (``runs.csv``).

A *cell* is one combination of the non-seed axes that are not columns; a *method* is one
combination of the column axes (default: the algorithm). Per cell, every method gets its mean
final ALMA with a 95% t-interval over seeds, and a paired comparison (same seeds) against a
reference method, Holm-adjusted over the whole family of comparisons in the table. The best
method of a row is marked only where it is significantly better than every other method of that
row (paired, Holm-adjusted over all such tests). README tables are this module's output,
pasted byte for byte (a test regenerates them from the committed runs.csv).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.stats import ALPHA, Paired, holm, mean_ci, paired
from fedkd.config import ConfigError

METRICS = ("alma", "alma_se", "global_acc", "self_weight")
# what a run cost, mean per round: kB up + down, clients' summed compute s, the server's compute s
COSTS = ("kb_per_round", "client_s_per_round", "server_s_per_round")


@dataclass(frozen=True)
class RunTable:
    axes: list[str]  # non-seed axes, in sweep order (columns and cell axes together)
    records: list[dict[str, Any]]  # one per run: axes (as text), "seed", METRICS and COSTS (float)


def axis_text(value: Any) -> str:
    """One spelling per axis value, whether it comes from a sweep or back from CSV."""
    if isinstance(value, bool):
        return str(value).lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value).lower() if str(value) in ("True", "False") else str(value)
    return f"{number:g}"


def write_runs_csv(table: RunTable) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*table.axes, "seed", *METRICS, *COSTS], lineterminator="\n")
    writer.writeheader()
    for record in table.records:
        writer.writerow({k: _csv_value(record.get(k, math.nan)) for k in writer.fieldnames})
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def read_runs_csv(text: str) -> RunTable:
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "seed" not in fields or "alma" not in fields:
        raise ConfigError("runs.csv needs the columns seed and alma")
    axes = fields[: fields.index("seed")]
    records = []
    for row in reader:
        record: dict[str, Any] = {a: axis_text(row[a]) for a in axes}
        record["seed"] = int(row["seed"])
        for metric in (*METRICS, *COSTS):  # an older runs.csv has no COSTS: nan
            record[metric] = float(row[metric]) if row.get(metric) else math.nan
        records.append(record)
    return RunTable(axes, records)


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
    table: RunTable, columns: list[str]
) -> tuple[list[str], dict[tuple, dict[str, dict[int, float]]]]:
    """-> (cell axes, {cell: {method: {seed: final ALMA}}})."""
    label = method_labeller(table, columns)
    cell_axes = [a for a in table.axes if a not in columns]
    cells: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in table.records:
        cell = tuple(record[a] for a in cell_axes)
        cells[cell][label(record)][record["seed"]] = record["alma"]
    return cell_axes, {cell: cells[cell] for cell in sorted_by_axes(cells, table, cell_axes)}


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


def _finite(values: dict[int, float]) -> dict[int, float]:
    return {seed: v for seed, v in values.items() if math.isfinite(v)}


def _pair(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Paired over the seeds both have a finite value for."""
    a, b = _finite(a), _finite(b)
    seeds = sorted(set(a) & set(b))
    return paired([a[s] for s in seeds], [b[s] for s in seeds])


# -- comparisons ---------------------------------------------------------------------------------
def comparisons(table: RunTable, columns: list[str], reference: str) -> list[dict[str, Any]]:
    """Every method vs the reference in every cell, Holm-adjusted over the whole family."""
    cell_axes, cells = grouped(table, columns)
    methods = methods_of(table, columns)
    reference = resolve_reference(reference, methods)
    out = []
    for cell, by_method in cells.items():
        if reference not in by_method:
            continue
        for method in methods:
            if method != reference and method in by_method:
                result = _pair(by_method[method], by_method[reference])
                out.append(
                    {
                        "cell": dict(zip(cell_axes, cell, strict=True)),
                        "method": method,
                        "reference": reference,
                        "test": result,
                    }
                )
    for row, adjusted in zip(out, holm([r["test"].p for r in out]), strict=True):
        row["p_holm"] = adjusted
        row["verdict"] = verdict(row["test"].mean_diff, adjusted)
    return out


def verdict(mean_diff: float, p_holm: float) -> str:
    if not math.isfinite(p_holm) or p_holm >= ALPHA:
        return "no significant difference"
    return "higher" if mean_diff > 0 else "lower"


def significantly_best(cells: dict[tuple, dict[str, dict[int, float]]]) -> dict[tuple, str | None]:
    """Per cell, the top method if it beats every other method of the cell (paired,
    Holm-adjusted over all these tests across the table), else None."""
    tests: list[tuple[tuple, Paired]] = []
    tops: dict[tuple, str] = {}
    for cell, by_method in cells.items():
        means = {m: float(np.mean(list(_finite(v).values()) or [math.nan])) for m, v in by_method.items()}
        means = {m: v for m, v in means.items() if math.isfinite(v)}
        if not means:
            continue
        tops[cell] = max(means, key=lambda m: means[m])
        tests += [
            (cell, _pair(by_method[tops[cell]], seeds)) for m, seeds in by_method.items() if m != tops[cell]
        ]
    adjusted = holm([t.p for _, t in tests])
    beaten: dict[tuple, bool] = {cell: cell in tops for cell in cells}
    for (cell, test), p in zip(tests, adjusted, strict=True):
        if not (test.mean_diff > 0 and math.isfinite(p) and p < ALPHA):
            beaten[cell] = False
    return {cell: tops[cell] if beaten[cell] and len(cells[cell]) > 1 else None for cell in cells}


# -- markdown ------------------------------------------------------------------------------------
def _num(value: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def pivot_markdown(table: RunTable, columns: list[str], reference: str | None = None) -> str:
    """Rows = cells, columns = methods (reference first), entries = mean final ALMA ± 95% CI
    half-width over the seeds with a finite value."""
    cell_axes, cells = grouped(table, columns)
    methods = methods_of(table, columns, reference)
    best = significantly_best(cells)
    header = [*cell_axes, "seeds", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for cell, by_method in cells.items():
        seeds = sorted({len(_finite(v)) for v in by_method.values()})
        entries = []
        for method in methods:
            if method not in by_method:
                entries.append("")
                continue
            mean, _, half = mean_ci(list(_finite(by_method[method]).values()))
            text = f"{_num(mean)} ± {_num(half)}"
            entries.append(f"**{text}**" if best[cell] == method else text)
        lines.append("| " + " | ".join([*cell, "/".join(map(str, seeds)), *entries]) + " |")
    return "\n".join(lines)


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cell_axes = list(rows[0]["cell"])
    header = [
        *cell_axes,
        "method",
        f"minus {rows[0]['reference']}",
        "95% CI (unadjusted)",
        "wins/losses",
        "p (Holm)",
        "verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        t: Paired = row["test"]
        ci = (
            f"[{t.mean_diff - t.ci_half:+.3f}, {t.mean_diff + t.ci_half:+.3f}]"
            if math.isfinite(t.ci_half)
            else "-"
        )
        p = (
            "-"
            if not math.isfinite(row["p_holm"])
            else (f"{row['p_holm']:.3g}" if row["p_holm"] >= 0.001 else "<0.001")
        )
        cells = [row["cell"][a] for a in cell_axes]
        lines.append(
            "| "
            + " | ".join(
                [*cells, row["method"], f"{t.mean_diff:+.3f}", ci, f"{t.wins}/{t.losses}", p, row["verdict"]]
            )
            + " |"
        )
    return "\n".join(lines)


def results_tables(table: RunTable, columns: list[str], reference: str) -> str:
    """The block a README pastes: the pivot table and the comparisons against the reference."""
    rows = comparisons(table, columns, reference)
    n_tests = len(rows)
    return (
        "Final ALMA, mean ± 95% CI half-width over seeds; **bold**: significantly better than every\n"
        "other method of its row (paired t-test over seeds, Holm-adjusted over the table).\n\n"
        + pivot_markdown(table, columns, reference)
        + "\n\n"
        + f"Paired differences against {rows[0]['reference'] if rows else reference} (same seeds), "
        + f"Holm-adjusted over {n_tests} comparisons at family-wise alpha {ALPHA:g}:\n\n"
        + comparison_markdown(rows)
        + "\n"
    )
