"""Sweep report: summary table (mean, std, 95% CI over seeds), paired tests, figures, report.md.

Statistics are over seeds: runs that differ only in ``seed`` form one group. A paired test
compares two algorithms on configurations that match in every other axis (seed included), so
each pair shares the same split and the same model initialisations.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from experiments import plots
from experiments.sweep import RUNS_FILE, read_rows
from fedkd.config import ConfigError

SEED = "seed"


def load_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    table = sweep_dir / RUNS_FILE
    if not table.exists():
        raise ConfigError(f"{table} does not exist; run `fedkd sweep ... --out {sweep_dir}` first")
    rows = [r for r in read_rows(table) if r.get("status") == "ok"]
    if not rows:
        raise ConfigError(f"{table} holds no finished run")
    for row in rows:
        with open(row["results"]) as handle:
            row["history"] = json.load(handle)
    return rows


def group_axes(rows: list[dict[str, Any]]) -> list[str]:
    axes: list[str] = []
    for row in rows:
        axes += [a for a in row["axes"] if a not in axes and a != SEED]
    return axes


def _key(row: dict[str, Any], axes: list[str]) -> tuple:
    return tuple(row["axes"].get(a) for a in axes)


def mean_std_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the 95% t-interval (nan for n < 2)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return float(arr.mean()), math.nan, math.nan
    std = float(arr.std(ddof=1))
    return float(arr.mean()), std, float(stats.t.ppf(0.975, arr.size - 1) * std / math.sqrt(arr.size))


def summary(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    axes = group_axes(rows)
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[_key(row, axes)].append(row)
    table = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        members = groups[key]
        alma_m, alma_s, alma_ci = mean_std_ci([r["final"]["alma"] for r in members])
        glob_m, glob_s, _ = mean_std_ci([r["final"]["global_acc"] for r in members])
        table.append(
            {
                **dict(zip(axes, key, strict=True)),
                "n": len(members),
                "alma_mean": alma_m,
                "alma_std": alma_s,
                "alma_ci95": alma_ci,
                "global_mean": glob_m,
                "global_std": glob_s,
            }
        )
    return axes, table


def paired_tests(rows: list[dict[str, Any]], reference: str = "knfu") -> list[dict[str, Any]]:
    """``reference`` vs each other algorithm, paired over all other axes (seeds included)."""
    if not any("algorithm" in r["axes"] for r in rows):
        return []
    others = [a for a in group_axes(rows) if a != "algorithm"] + [SEED]
    by_alg: dict[str, dict[tuple, float]] = defaultdict(dict)
    for row in rows:
        by_alg[row["axes"]["algorithm"]][_key(row, others)] = row["final"]["alma"]
    if reference not in by_alg:
        return []
    results = []
    for alg in sorted(a for a in by_alg if a != reference):
        common = sorted(set(by_alg[reference]) & set(by_alg[alg]), key=str)
        if len(common) < 2:
            continue
        diff = np.array([by_alg[reference][k] - by_alg[alg][k] for k in common])
        p = float(
            stats.ttest_rel([by_alg[reference][k] for k in common], [by_alg[alg][k] for k in common]).pvalue
        )
        results.append(
            {
                "reference": reference,
                "other": alg,
                "pairs": len(common),
                "mean_diff": float(diff.mean()),
                "wins": int((diff > 0).sum()),
                "losses": int((diff < 0).sum()),
                "p_value": p,
            }
        )
    return results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _axis(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown_table(axes: list[str], table: list[dict[str, Any]]) -> str:
    header = [*axes, "n", "final ALMA (mean ± std)", "95% CI ±", "global acc (mean ± std)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        cells = [_axis(row[a]) for a in axes] + [
            str(row["n"]),
            f"{_fmt(row['alma_mean'])} ± {_fmt(row['alma_std'])}",
            _fmt(row["alma_ci95"]),
            f"{_fmt(row['global_mean'])} ± {_fmt(row['global_std'])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(axes: list[str], table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[*axes, "n", "alma_mean", "alma_std", "alma_ci95", "global_mean", "global_std"]
    )
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def write_report(
    sweep_dir: str | Path, out: str | Path | None = None, run_id: str | None = None, audit: str | None = None
) -> Path:
    """Write report.md, summary.md/.csv and figures into ``out`` (default: the sweep folder)."""
    from fedkd.results import atomic_write_text

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir
    rows = load_runs(sweep_dir)
    axes, table = summary(rows)
    tests = paired_tests(rows)
    chosen = next((r for r in rows if r["id"] == run_id), None) if run_id else plots.pick_fusion_run(rows)
    figures = plots.sweep_figures(rows, axes, out / "figures", chosen)
    if audit:
        audit_rows = json.loads(Path(audit).read_text())["rows"]
        figures["privacy trade-off"] = plots.privacy_tradeoff(
            rows, audit_rows, out / "figures" / "privacy.png"
        )
    atomic_write_text(out / "summary.md", markdown_table(axes, table) + "\n")
    atomic_write_text(out / "summary.csv", csv_text(axes, table))
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"{len(rows)} finished runs; statistics over seeds (mean ± sample std, 95% t-interval).",
        "",
        markdown_table(axes, table),
        "",
    ]
    if tests:
        lines += [
            "## Paired comparisons (final ALMA, paired over every other axis and seed)",
            "",
            "| reference | other | pairs | mean diff | wins | losses | p (paired t) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['reference']} | {t['other']} | {t['pairs']} | {t['mean_diff']:+.4f} | {t['wins']} | "
            f"{t['losses']} | {t['p_value']:.3g} |"
            for t in tests
        ]
        lines.append("")
    lines += ["## Figures", ""] + [f"![{name}](figures/{path.name})" for name, path in figures.items()]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
