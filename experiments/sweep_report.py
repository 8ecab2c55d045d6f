"""Sweep report: per-cell statistics with CIs, Holm-adjusted paired comparisons, figures.

Statistics are over seeds: runs that differ only in ``seed`` form one group. Comparisons pair
two methods on the same cell and seed, so each pair shares the same split and the same initial
models (experiments/tables.py). The flat runs.csv written here is the single source of every
published number.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from experiments.audit_table import audit_markdown
from experiments.figures.communication import alma_vs_bytes
from experiments.figures.privacy import privacy_tradeoff
from experiments.figures.sweep import pick_fusion_run, sweep_figures
from experiments.stats import mean_ci
from experiments.sweep import RUNS_FILE, read_rows
from experiments.tables import (
    COSTS,
    METRICS,
    RunTable,
    axis_text,
    methods_of,
    read_runs_csv,
    resolve_reference,
    results_tables,
    sorted_by_axes,
    write_runs_csv,
)
from fedkd.errors import ConfigError
from fedkd.results_files import atomic_write_text, load_results

SEED = "seed"
log = logging.getLogger("flwr.fedkd")
RUNS_CSV = "runs.csv"


def load_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Finished runs with their results; damaged lines and unreadable results files are
    skipped with a warning, never silently."""
    table = sweep_dir / RUNS_FILE
    if not table.exists():
        raise ConfigError(f"{table} does not exist; run `fedkd sweep ... --out {sweep_dir}` first")
    damaged: list[int] = []
    rows = []
    for row in read_rows(table, damaged):
        if row.get("status") != "ok":
            continue
        path = sweep_dir / row["results"]  # relative to the sweep folder (an absolute path stays)
        try:
            row["history"] = load_results(path)  # results.json with its rounds.jsonl
        except (OSError, ValueError) as exc:
            log.warning("report: run %s skipped: cannot read %s (%s)", row["id"], path, type(exc).__name__)
            continue
        if not row["history"].get("final"):
            log.warning("report: run %s skipped: it has no evaluated round", row["id"])
            continue
        rows.append(row)
    if damaged:
        log.warning("report: %s: skipped damaged line(s) %s", table, ", ".join(map(str, damaged)))
    if not rows:
        raise ConfigError(f"{table} holds no finished run")
    return rows


def group_axes(rows: list[dict[str, Any]]) -> list[str]:
    axes: list[str] = []
    for row in rows:
        axes += [a for a in row["axes"] if a not in axes and a != SEED]
    return axes


def run_table(rows: list[dict[str, Any]]) -> RunTable:
    """The flat table every statistic is computed from: one record per finished run."""
    axes = group_axes(rows)
    records = []
    for row in rows:
        final = row["history"].get("final") or row["final"]
        record: dict[str, Any] = {a: axis_text(row["axes"].get(a, "")) for a in axes}
        record["seed"] = int(row["axes"].get(SEED, row["config"].get(SEED, 0)))
        for metric in METRICS:
            value = final.get(metric)
            record[metric] = float(value) if value is not None else math.nan
        record.update(run_costs(row["history"]["rounds"]))
        records.append(record)
    return RunTable(axes, records)


def run_costs(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """COSTS of one run: mean per round of kB on the wire (up + down), the clients' summed
    compute seconds and the server's compute seconds (FedDF's distillation, say)."""

    def mean(key: str) -> float:
        return _finite_mean([float(r[key]) for r in rounds if r.get(key) is not None])

    return {
        "kb_per_round": _finite_mean([(r["bytes_up"] + r["bytes_down"]) / 1e3 for r in rounds]),
        "client_s_per_round": mean("compute_s"),
        "server_s_per_round": mean("server_compute_s"),
    }


def summary(table: RunTable) -> list[dict[str, Any]]:
    """Per group of runs that differ only in seed: ALMA mean, std, 95% CI; sampling error of
    one run's ALMA (its local test splits); global accuracy; KnFu's mean self-weight; the costs
    per round (COSTS), means over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in table.records:
        groups[tuple(record[a] for a in table.axes)].append(record)
    out = []
    for key in sorted_by_axes(groups, table, table.axes):
        members = groups[key]
        alma_m, alma_s, alma_ci = mean_ci([r["alma"] for r in members])
        out.append(
            {
                **dict(zip(table.axes, key, strict=True)),
                "n": len(members),
                "alma_mean": alma_m,
                "alma_std": alma_s,
                "alma_ci95": alma_ci,
                "alma_se_run": _finite_mean([r["alma_se"] for r in members]),
                "global_mean": _finite_mean([r["global_acc"] for r in members]),
                "self_weight": _finite_mean([r["self_weight"] for r in members]),
                **{cost: _finite_mean([r[cost] for r in members]) for cost in COSTS},
            }
        )
    return out


def _finite_mean(values: list[float]) -> float:
    arr = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _cell(key: str, value: Any) -> str:
    """kB per round to 0.1 kB; everything else as _fmt."""
    if key == "kb_per_round" and isinstance(value, float) and not math.isnan(value):
        return f"{value:,.1f}"
    return _fmt(value)


SUMMARY_COLUMNS = {
    "n": "seeds",
    "alma_mean": "final ALMA mean",
    "alma_std": "std",
    "alma_ci95": "95% CI ±",
    "alma_se_run": "one run's sampling SE",
    "global_mean": "global acc",
    "self_weight": "self-weight",
    "kb_per_round": "kB / round",
    "client_s_per_round": "clients' compute s / round",
    "server_s_per_round": "server compute s / round",
}


def markdown_table(axes: list[str], table: list[dict[str, Any]]) -> str:
    header = [*axes, *SUMMARY_COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        lines.append(
            "| " + " | ".join([row[a] for a in axes] + [_cell(k, row[k]) for k in SUMMARY_COLUMNS]) + " |"
        )
    return "\n".join(lines)


def csv_text(axes: list[str], table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*axes, *SUMMARY_COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def default_columns(axes: list[str]) -> list[str]:
    return ["algorithm"] if "algorithm" in axes else axes[:1]


def write_report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    run_id: str | None = None,
    audit: str | None = None,
    reference: str = "local",
    columns: list[str] | None = None,
) -> Path:
    """Write runs.csv, summary.md/.csv, results.md (the README block), figures and report.md into
    ``out`` (default: the sweep folder). Every table is computed from runs.csv as written, so
    the committed CSV regenerates the published tables exactly."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir
    rows = load_runs(sweep_dir)
    runs_csv = write_runs_csv(run_table(rows))
    table = read_runs_csv(runs_csv)
    columns = columns or default_columns(table.axes)
    blocks = results_tables(table, columns, reference) if _has_reference(table, columns, reference) else ""
    per_group = summary(table)
    chosen = next((r for r in rows if r["id"] == run_id), None) if run_id else pick_fusion_run(rows)
    figures = sweep_figures(rows, group_axes(rows), out / "figures", chosen)
    communication = alma_vs_bytes(rows, group_axes(rows), out / "figures" / "alma_vs_bytes.png")
    if communication is not None:
        figures["ALMA vs bytes per round"] = communication
    if audit:
        audited = json.loads(Path(audit).read_text())
        figures["privacy trade-off"] = privacy_tradeoff(rows, audited, out / "figures" / "privacy.png")
        blocks += "\n" + audit_markdown(audited)
    atomic_write_text(out / RUNS_CSV, runs_csv)
    atomic_write_text(out / "summary.md", markdown_table(table.axes, per_group) + "\n")
    atomic_write_text(out / "summary.csv", csv_text(table.axes, per_group))
    atomic_write_text(out / "results.md", blocks)
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"{len(rows)} finished runs; statistics over seeds.",
        "",
    ]
    if blocks:
        lines += ["## Comparisons", "", blocks]
    lines += [
        "## Every group (mean, sample std and 95% t-interval over seeds)",
        "",
        markdown_table(table.axes, per_group),
        "",
    ]
    lines += ["## Figures", ""] + [f"![{name}](figures/{path.name})" for name, path in figures.items()]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def _has_reference(table: RunTable, columns: list[str], reference: str) -> bool:
    try:
        resolve_reference(reference, methods_of(table, columns))
    except ConfigError:
        return False
    return True
