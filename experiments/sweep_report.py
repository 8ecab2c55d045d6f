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

from experiments.audit_table import audit_markdown
from experiments.figures.communication import alma_vs_bytes
from experiments.figures.privacy import privacy_tradeoff
from experiments.figures.sweep import pick_fusion_run, sweep_figures
from experiments.latex_tables import latex_tables
from experiments.run_records import (
    COSTS,
    FAILED,
    STEPS,
    RunTable,
    at_val,
    finite_mean,
    headline,
    read_runs_csv,
    run_record,
    write_runs_csv,
)
from experiments.setting import setting_line
from experiments.stats import mean_ci
from experiments.sweep import RUNS_FILE, read_rows
from experiments.tables import methods_of, resolve_reference, results_tables, sorted_by_axes
from fedkd.csv_cells import cell
from fedkd.errors import ConfigError
from fedkd.metric_specs import recorded, recorded_names
from fedkd.results_files import atomic_write_text, load_results

SEED = "seed"
log = logging.getLogger("flwr.fedkd")
RUNS_CSV = "runs.csv"


def load_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every run of the sweep, one row per run id (a retried run's latest row): finished ones with
    their results (``history``); a failed run, or one whose results cannot be read or hold no
    evaluated round, without (each named in a warning). Damaged lines are skipped with a warning."""
    table = sweep_dir / RUNS_FILE
    if not table.exists():
        raise ConfigError(f"{table} does not exist; run `fedkd sweep ... --out {sweep_dir}` first")
    damaged: list[int] = []
    latest = {row["id"]: row for row in read_rows(table, damaged)}  # a retry's row comes later
    rows = []
    for row in latest.values():
        if row.get("status") == "ok":
            path = sweep_dir / row["results"]  # relative to the sweep folder (an absolute path stays)
            try:
                history = load_results(path)  # results.json with its rounds.jsonl
            except (OSError, ValueError) as exc:
                log.warning("report: run %s failed: cannot read %s (%s)", row["id"], path, type(exc).__name__)
                history = None
            if history is not None and not history.get("final"):
                log.warning("report: run %s failed: it has no evaluated round", row["id"])
            elif history is not None:
                row["history"] = history
        rows.append(row)
    if damaged:
        log.warning("report: %s: skipped damaged line(s) %s", table, ", ".join(map(str, damaged)))
    if not any("history" in row for row in rows):
        raise ConfigError(f"{table} holds no finished run")
    return rows


def group_axes(rows: list[dict[str, Any]]) -> list[str]:
    axes: list[str] = []
    for row in rows:
        axes += [a for a in row["axes"] if a not in axes and a != SEED]
    return axes


def run_table(rows: list[dict[str, Any]]) -> RunTable:
    """The flat table every statistic is computed from: one record per run, failed ones too."""
    axes = group_axes(rows)
    return RunTable(axes, [run_record(axes, row) for row in rows])


def failed_note(table: RunTable, limit: int = 4) -> str | None:
    """One line naming how many runs failed and where (cell axes and seed), or None."""
    failed = [r for r in table.records if r.get("status") == FAILED]
    if not failed:
        return None
    where = ["/".join(f"{a}={r[a]}" for a in (*table.axes, "seed")) for r in failed]
    more = f" and {len(where) - limit} more" if len(where) > limit else ""
    return (
        f"{len(failed)} failed run(s), counted in each cell's 'failed' and in no mean: "
        f"{'; '.join(where[:limit])}{more} (errors in {RUNS_FILE})"
    )


def summary(table: RunTable) -> list[dict[str, Any]]:
    """Per group of runs that differ only in seed: finished and failed runs; headline ALMA mean,
    std, 95% CI over the finished ones; the headline ALMA at the round chosen on validation; the
    own-split ALMA; sampling error of one run's headline ALMA; global accuracy; KnFu's mean
    self-weight; optimiser steps (STEPS) and costs per round (COSTS), means over seeds."""
    key = headline(table)
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in table.records:
        groups[tuple(record[a] for a in table.axes)].append(record)
    out = []
    for group in sorted_by_axes(groups, table, table.axes):
        members = [r for r in groups[group] if r.get("status") != FAILED]
        alma_m, alma_s, alma_ci = mean_ci([r[key] for r in members if math.isfinite(r[key])])

        def mean(column: str, members=members) -> float:
            return finite_mean([r[column] for r in members])

        out.append(
            {
                **dict(zip(table.axes, group, strict=True)),
                "n": len(members),
                "n_failed": len(groups[group]) - len(members),
                "alma_mean": alma_m,
                "alma_std": alma_s,
                "alma_ci95": alma_ci,
                "alma_at_val": mean(at_val(key)),
                "alma_own": mean("alma"),
                "alma_se_run": mean(key + "_se"),
                "global_mean": mean("global_acc"),
                "self_weight": mean("self_weight"),
                **{column: mean(column) for column in (*STEPS, *COSTS, *recorded_names())},
            }
        )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _cell(key: str, value: Any) -> str:
    """kB per round and optimiser steps to one decimal; everything else as _fmt."""
    if key in ("kb_per_round", *STEPS) and isinstance(value, float) and not math.isnan(value):
        return f"{value:,.1f}"
    return _fmt(value)


SUMMARY_COLUMNS = {
    "n": "seeds",
    "n_failed": "failed",
    "alma_mean": "final ALMA mean",
    "alma_std": "std",
    "alma_ci95": "95% CI ±",
    "alma_at_val": "ALMA at val round",
    "alma_own": "ALMA (own split)",
    "alma_se_run": "one run's sampling SE",
    "global_mean": "global acc",
    "self_weight": "self-weight",
    "private_steps": "private steps / client·round",
    "transfer_steps": "transfer steps / client·round",
    "client_steps": "steps / client·round",
    "server_steps": "server steps / round",
    "pretrain_steps": "pretraining steps / client",
    "kb_per_round": "kB / round",
    "client_s_per_round": "clients' compute s / round",
    "server_s_per_round": "server compute s / round",
}


def summary_columns() -> dict[str, str]:
    """Column -> header of the summary: fedkd's, then each recorded metric (final round mean)."""
    return {**SUMMARY_COLUMNS, **{spec.record: spec.header for spec in recorded()}}


def markdown_table(axes: list[str], table: list[dict[str, Any]], key: str = "alma") -> str:
    """``key``: the headline ALMA the ALMA columns hold (named in the header when it is the
    label-mix-matched one)."""
    names = summary_columns()
    if key == "alma_matched":
        names["alma_mean"] = "final ALMA (matched) mean"
    header = [*axes, *names.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        lines.append(
            "| " + " | ".join([row[a] for a in axes] + [_cell(k, row[k]) for k in summary_columns()]) + " |"
        )
    return "\n".join(lines)


def csv_text(axes: list[str], table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*axes, *summary_columns()], lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: cell(value) for key, value in row.items()} for row in table)
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
    margin: float | None = None,
) -> Path:
    """Write runs.csv, summary.md/.csv, results.md (the README block), results.tex (the same tables
    as booktabs floats), figures and report.md into
    ``out`` (default: the sweep folder). Every table is computed from runs.csv as written, so
    the committed CSV regenerates the published tables exactly. ``margin``: of the equivalence
    verdicts (accuracy, 0.01 = 1 point). Failed runs are counted per cell and named in a warning."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir
    rows = load_runs(sweep_dir)
    runs_csv = write_runs_csv(run_table(rows))
    table = read_runs_csv(runs_csv)
    columns = columns or default_columns(table.axes)
    has_reference = _has_reference(table, columns, reference)
    axes = {axis for r in rows for axis in r.get("axes", {})}
    setting = setting_line([r.get("config", {}) for r in rows], [r["seed"] for r in table.records], axes)
    blocks = results_tables(table, columns, reference, margin, setting) if has_reference else ""
    latex = latex_tables(table, columns, reference, margin, setting, sweep_dir.name) if has_reference else ""
    per_group = summary(table)
    done = [r for r in rows if "history" in r]
    chosen = next((r for r in done if r["id"] == run_id), None) if run_id else pick_fusion_run(done)
    figures = sweep_figures(done, group_axes(done), out / "figures", chosen)
    communication = alma_vs_bytes(done, group_axes(done), out / "figures" / "alma_vs_bytes.png")
    if communication is not None:
        figures["ALMA vs bytes per round"] = communication
    if audit:
        audited = json.loads(Path(audit).read_text())
        figures["privacy trade-off"] = privacy_tradeoff(done, audited, out / "figures" / "privacy.png")
        blocks += "\n" + audit_markdown(audited)
    atomic_write_text(out / RUNS_CSV, runs_csv)
    key = headline(table)
    atomic_write_text(
        out / "summary.md", setting + "\n\n" + markdown_table(table.axes, per_group, key) + "\n"
    )
    atomic_write_text(out / "summary.csv", csv_text(table.axes, per_group))
    atomic_write_text(out / "results.md", blocks)
    atomic_write_text(out / "results.tex", latex)
    failed = failed_note(table)
    if failed:
        log.warning("report: %s", failed)
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"{len(done)} finished runs; statistics over seeds.",
        "",
        setting,
        "",
        *([f"**Warning**: {failed}.", ""] if failed else []),
    ]
    if blocks:
        lines += ["## Comparisons", "", blocks]
    lines += [
        "## Every group (mean, sample std and 95% t-interval over seeds)",
        "",
        markdown_table(table.axes, per_group, key),
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
