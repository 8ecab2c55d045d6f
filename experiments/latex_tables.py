"""The tables of experiments/tables.py as LaTeX (booktabs) floats, to paste into a paper unchanged.

The same numbers as the Markdown tables (both are computed from runs.csv by the same functions);
the headline table marks each method's verdict against the reference beside its mean, and a
footnote under it names the test, the correction and the marks. Needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import math
from typing import Any

from experiments.comparisons import comparisons, finite, grouped, methods_of, significantly_best
from experiments.run_records import RunTable, headline
from experiments.stats import ALPHA, mean_ci

SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
MARKS = {"higher": r"$^{\uparrow}$", "lower": r"$^{\downarrow}$", "equivalent": r"$^{\approx}$"}


def escape(text: str) -> str:
    """Text safe in LaTeX's text mode (method names, axis values, the setting line)."""
    return "".join(SPECIAL.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$")


def _num(value: float, digits: int = 3) -> str:
    return "--" if not math.isfinite(value) else f"{value:.{digits}f}"


def _mark(verdict: str) -> str:
    return next((mark for word, mark in MARKS.items() if verdict.startswith(word)), "")


def _tabular(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    return [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]


def _float(body: list[str], caption: str, label: str, note: str = "") -> str:
    """A table float; footnote-size type and narrower column gaps so that wide tables fit one column."""
    notes = [r"\par\smallskip", rf"{{\footnotesize {note}\par}}"] if note else []
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\footnotesize",
            r"\setlength{\tabcolsep}{4pt}",
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            *body,
            *notes,
            r"\end{table}",
        ]
    )


def _what(table: RunTable) -> str:
    which = (
        "ALMA on a label-mix-matched sample of the global test set"
        if headline(table) == "alma_matched"
        else "ALMA on each client's own test split"
    )
    return f"Final {which}, mean $\\pm$ 95\\% CI half-width over seeds."


def _footnote(rows: list[dict[str, Any]], reference: str, margin: float | None) -> str:
    n = len(rows)
    text = (
        rf"$\uparrow$/$\downarrow$: significantly higher/lower than {escape(reference)} (paired $t$-test"
        rf" over seeds, Holm-adjusted over {n} comparison{'' if n == 1 else 's'}, family-wise"
        rf" $\alpha = {ALPHA:g}$)"
    )
    if margin is not None:
        text += (
            rf"; $\approx$: equivalent within $\pm{margin:g}$ (two one-sided paired $t$-tests, Holm-adjusted"
            " as a second family)"
        )
    return text + r"; \textbf{bold}: significantly better than every other method of its row (paired, Holm)."


def headline_latex(
    table: RunTable, columns: list[str], reference: str, margin: float | None, setting: str, label: str
) -> str:
    """Rows = cells, columns = methods (reference first); mean ± CI, the verdict's mark, bold best."""
    cell_axes, cells = grouped(table, columns)
    methods = methods_of(table, columns, reference)
    best = significantly_best(cells)
    rows = comparisons(table, columns, reference, margin)
    marks = {(tuple(r["cell"].values()), r["method"]): _mark(r["verdict"]) for r in rows}
    body = []
    for cell, by_method in cells.items():
        entries = []
        for method in methods:
            if method not in by_method:
                entries.append("")
                continue
            mean, _, half = mean_ci(list(finite(by_method[method]).values()))
            text = f"{_num(mean)}{{\\scriptsize\\,$\\pm$\\,{_num(half)}}}"
            text = rf"\textbf{{{text}}}" if best[cell] == method else text
            entries.append(text + marks.get((cell, method), ""))
        seeds = "/".join(map(str, sorted({len(finite(v)) for v in by_method.values()})))
        body.append([*map(escape, cell), seeds, *entries])
    header = [*map(escape, cell_axes), "seeds", *map(escape, methods)]
    tabular = _tabular(header, body, "l" * len(cell_axes) + "r" + "c" * len(methods))
    reference_name = rows[0]["reference"] if rows else reference
    return _float(
        tabular, _what(table) + " " + escape(setting), label, _footnote(rows, reference_name, margin)
    )


def comparisons_latex(
    table: RunTable, columns: list[str], reference: str, margin: float | None, setting: str, label: str
) -> str:
    """One row per comparison with the reference: difference, its 95% CI, wins/losses, p, verdict."""
    rows = comparisons(table, columns, reference, margin)
    if not rows:
        return ""
    cell_axes = list(rows[0]["cell"])
    header = [*map(escape, cell_axes), "method", r"$\Delta$", r"95\% CI", "W/L", "$p$ (Holm)", "verdict"]
    body = []
    for row in rows:
        t = row["test"]
        ci = (
            f"[{t.mean_diff - t.ci_half:+.3f}, {t.mean_diff + t.ci_half:+.3f}]"
            if math.isfinite(t.ci_half)
            else "--"
        )
        p = row["p_holm"]
        p_text = "--" if not math.isfinite(p) else (f"{p:.3g}" if p >= 0.001 else "$<$0.001")
        cells = [escape(row["cell"][a]) for a in cell_axes]
        body.append(
            [
                *cells,
                escape(row["method"]),
                f"{t.mean_diff:+.3f}",
                ci,
                f"{t.wins}/{t.losses}",
                p_text,
                escape(row["verdict"]),
            ]
        )
    caption = (
        f"Paired differences against {escape(rows[0]['reference'])} (same seeds; CI unadjusted, $p$"
        f" Holm-adjusted over {len(rows)} comparisons). " + escape(setting)
    )
    return _float(_tabular(header, body, "l" * (len(cell_axes) + 1) + "rcrrl"), caption, label)


def latex_tables(
    table: RunTable,
    columns: list[str],
    reference: str,
    margin: float | None,
    setting: str,
    name: str = "results",
) -> str:
    """Both floats, labelled ``tab:NAME`` and ``tab:NAME-comparisons``."""
    label = "tab:" + "".join(ch if ch.isalnum() or ch in "-:" else "-" for ch in name)
    parts = [
        headline_latex(table, columns, reference, margin, setting, label),
        comparisons_latex(table, columns, reference, margin, setting, label + "-comparisons"),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
