"""Result tables of a sweep in markdown, computed from one flat table of runs (``runs.csv``).

Rows are cells, columns methods (experiments/comparisons.py). Per cell, every method gets its
mean final headline ALMA with a 95% t-interval over seeds, and a paired comparison (same seeds)
against a reference method with its verdict. The best method of a row is marked only where it
is significantly better than every other method of that row (paired, Holm-adjusted over all
such tests). Runs that record the newer keys (matched ALMA, validation split, optimiser steps)
also get global accuracy beside ALMA, the ALMA at the round chosen on validation and the steps;
older runs' tables stay exactly as they were. README tables are this module's output, pasted
byte for byte (a test regenerates them from the committed runs.csv).
"""

from __future__ import annotations

import math
from typing import Any

from experiments.comparisons import (  # noqa: F401 - re-exported: the tables' one import
    comparisons,
    failed_per_cell,
    finite,
    grouped,
    methods_of,
    resolve_reference,
    significantly_best,
    sorted_by_axes,
)
from experiments.run_records import (  # noqa: F401 - RunTable and its CSV form: re-exported
    AT_VAL,
    COSTS,
    MATCHED,
    METRICS,
    STEPS,
    RunTable,
    at_val,
    axis_text,
    finite_mean,
    headline,
    read_runs_csv,
    write_runs_csv,
)
from experiments.stats import ALPHA, Paired, mean_ci


# -- markdown ------------------------------------------------------------------------------------
def _num(value: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _has(table: RunTable, keys: tuple[str, ...]) -> bool:
    return any(math.isfinite(r.get(k, math.nan)) for r in table.records for k in keys)


def _seeds_text(by_method: dict[str, dict[int, float]], failed: int) -> str:
    """Seeds with a value per method (one number when all agree), and the cell's failed runs."""
    seeds = "/".join(map(str, sorted({len(finite(v)) for v in by_method.values()})))
    return seeds + (f" ({failed} failed)" if failed else "")


def pivot_markdown(
    table: RunTable,
    columns: list[str],
    reference: str | None = None,
    key: str | None = None,
    beside: str | None = None,
) -> str:
    """Rows = cells, columns = methods (reference first), entries = mean of ``key`` (default:
    the final headline ALMA) ± 95% CI half-width over the seeds with a finite value, the mean
    of ``beside`` in brackets when given; bold marks the row's significantly best method."""
    cell_axes, cells = grouped(table, columns, key)
    extra = grouped(table, columns, beside)[1] if beside else {}
    failed = failed_per_cell(table, columns)
    methods = methods_of(table, columns, reference)
    best = significantly_best(cells)
    header = [*cell_axes, "seeds", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]

    def entry(cell: tuple, method: str) -> str:
        mean, _, half = mean_ci(list(finite(cells[cell][method]).values()))
        text = f"{_num(mean)} ± {_num(half)}"
        text = f"**{text}**" if best[cell] == method else text
        return text + (f" ({_num(finite_mean(list(extra[cell][method].values())))})" if beside else "")

    for cell, by_method in cells.items():
        entries = _entries(cell, by_method, methods, entry)
        lines.append("| " + " | ".join([*cell, _seeds_text(by_method, failed.get(cell, 0)), *entries]) + " |")
    return "\n".join(lines)


def _entries(cell: tuple, by_method: dict, methods: list[str], entry) -> list[str]:
    """One table row's method columns: ``entry(cell, method)``, blank where the cell lacks it."""
    return [entry(cell, method) if method in by_method else "" for method in methods]


def steps_markdown(table: RunTable, columns: list[str], reference: str | None = None) -> str:
    """Rows = cells, columns = methods, entries = optimiser steps per participating client and
    round, private + transfer set (the server's steps per round in brackets where it trains, and
    a client's steps pretraining on the labelled transfer set, once, where it pretrains)."""
    cell_axes, private = grouped(table, columns, "private_steps")
    transfer, server, pretrain = (
        grouped(table, columns, "transfer_steps")[1],
        grouped(table, columns, "server_steps")[1],
        grouped(table, columns, "pretrain_steps")[1],
    )
    methods = methods_of(table, columns, reference)
    header = [*cell_axes, *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]

    def entry(cell: tuple, method: str) -> str:
        mine = [finite_mean(list(d[cell][method].values())) for d in (private, transfer, server, pretrain)]
        text = f"{_num(mine[0], 1)} + {_num(mine[1], 1)}"
        text += f" (server {mine[2]:.0f})" if mine[2] > 0 else ""
        return text + (f" (+{mine[3]:.0f} pretraining)" if mine[3] > 0 else "")

    for cell, by_method in private.items():
        lines.append("| " + " | ".join([*cell, *_entries(cell, by_method, methods, entry)]) + " |")
    return "\n".join(lines)


def _p_text(p: float) -> str:
    return "-" if not math.isfinite(p) else (f"{p:.3g}" if p >= 0.001 else "<0.001")


def comparison_markdown(rows: list[dict[str, Any]], margin: float | None = None) -> str:
    """One line per comparison; with a margin, the equivalence test's Holm-adjusted p too."""
    if not rows:
        return ""
    cell_axes = list(rows[0]["cell"])
    p_columns = ["p (Holm)", *(["p equiv (Holm)"] if margin is not None else [])]
    header = [
        *cell_axes,
        "method",
        f"minus {rows[0]['reference']}",
        "95% CI (unadjusted)",
        "wins/losses",
        *p_columns,
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
        ps = [_p_text(row["p_holm"]), *([_p_text(row["p_equiv_holm"])] if margin is not None else [])]
        cells = [row["cell"][a] for a in cell_axes]
        lines.append(
            "| "
            + " | ".join(
                [
                    *cells,
                    row["method"],
                    f"{t.mean_diff:+.3f}",
                    ci,
                    f"{t.wins}/{t.losses}",
                    *ps,
                    row["verdict"],
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _verdict_note(n_tests: int, margin: float | None) -> str:
    """How the verdicts are reached: the end of the sentence that introduces the comparisons."""
    if margin is None:
        return ":"
    points = margin * 100
    return (
        f'. Verdicts: "higher"/"lower" where p (Holm) < {ALPHA:g}; else "equivalent within ±{margin:g}"'
        f" (margin {points:g} accuracy point{'' if points == 1 else 's'}) where both one-sided paired"
        f" t-tests (TOST) reject a difference of {margin:g} or more, that is where p equiv (Holm), the"
        f" larger one-sided p Holm-adjusted over the {n_tests} equivalence tests as a second family, is"
        f' < {ALPHA:g}; else "inconclusive".'
    )


def _caption(table: RunTable) -> str:
    if headline(table) == "alma_matched":
        what = (
            "Final ALMA (each client scored on a sample of the global test set drawn with its own"
            " training label mix), mean ± 95% CI half-width over seeds, global test accuracy in brackets"
        )
    else:
        what = "Final ALMA (each client on its own test split), mean ± 95% CI half-width over seeds, global"
        what += " test accuracy in brackets"
    return (
        what + "; **bold**: significantly better than every other method of its row (paired t-test over"
        " seeds, Holm-adjusted over the table)."
    )


def results_tables(
    table: RunTable,
    columns: list[str],
    reference: str,
    margin: float | None = None,
    setting: str | None = None,
) -> str:
    """The block a README pastes: the headline pivot table (with global accuracy, the ALMA at the
    round chosen on validation and the optimiser steps where the runs record them) and the
    comparisons against the reference, with equivalence verdicts when ``margin`` is given.
    ``setting``: the sweep's fixed setting (experiments/setting.py), the block's first line."""
    rows = comparisons(table, columns, reference, margin)
    n_tests = len(rows)
    key = headline(table)
    if _has(table, (*MATCHED, *AT_VAL, *STEPS)):
        parts = [_caption(table), pivot_markdown(table, columns, reference, beside="global_acc")]
    else:  # older runs: the table exactly as published before
        parts = [
            "Final ALMA, mean ± 95% CI half-width over seeds; **bold**: significantly better than every\n"
            "other method of its row (paired t-test over seeds, Holm-adjusted over the table).",
            pivot_markdown(table, columns, reference),
        ]
    if _has(table, (at_val(key),)):
        parts += [
            "ALMA as above at the round chosen on validation (each run's evaluated round with the highest"
            " validation ALMA; ties: the later round), global test accuracy at that round in brackets:",
            pivot_markdown(table, columns, reference, key=at_val(key), beside="global_at_val"),
        ]
    if _has(table, STEPS):
        parts += [
            "Optimiser steps per participating client and round (mean over rounds and seeds): on private"
            " data + on the transfer set; the server's own steps per round in brackets where it trains:",
            steps_markdown(table, columns, reference),
        ]
    parts = [setting, *parts] if setting else parts
    parts.append(
        f"Paired differences against {rows[0]['reference'] if rows else reference} (same seeds), "
        + f"Holm-adjusted over {n_tests} comparisons at family-wise alpha {ALPHA:g}"
        + _verdict_note(n_tests, margin)
    )
    return "\n\n".join(parts) + "\n\n" + comparison_markdown(rows, margin) + "\n"
