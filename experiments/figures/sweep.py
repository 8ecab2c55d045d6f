"""The figures of a sweep (``fedkd report``): ALMA per round, ALMA against optimiser steps,
final ALMA against each numeric axis, every client's final accuracy, bytes per round, and one
chosen run's weights and split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from experiments.figures.common import (
    Style,
    accuracy_limits,
    figure_legend,
    integer_rounds,
    legend_outside,
    new_figure,
    save,
    styles_for,
    varies,
)
from experiments.figures.panels import (
    Row,
    algorithm_of,
    algorithms,
    final_alma_errorbar,
    grid,
    headline_key,
    label_panel,
    nan_mean_std,
    numeric_axes,
    panels,
    round_matrix,
)
from experiments.figures.partition import run_partition_figure
from experiments.figures.run import evaluated_rounds
from experiments.figures.weights import weights_figure
from experiments.run_records import round_steps
from experiments.stats import mean_ci
from fedkd.errors import ConfigError

AXIS_LABELS = {
    "alpha": "Dirichlet alpha (larger = more IID)",
    "noise-multiplier": "noise multiplier (per-entry std / clip)",
    "max-client-samples": "private samples per client (cap)",
    "num-clients": "clients",
}
log = logging.getLogger("flwr.fedkd")
LOG_RANGE = 20.0  # a kB axis turns logarithmic only when its positive values span this factor or more


def pick_fusion_run(rows: list[Row]) -> Row | None:
    """The run whose weight matrix the report shows: the first KnFu run, else the first run."""
    for row in rows:
        if algorithm_of(row).startswith("knfu"):
            return row
    return rows[0] if rows else None


def _headline_label(key: str) -> str:
    what = "ALMA (label-mix-matched)" if key == "alma_matched" else "ALMA"
    return f"{what}, mean and 95% CI over seeds"


def alma_per_round_figure(
    rows: list[Row], axes: list[str], path: Path, style: dict[str, Style]
) -> Path | None:
    """Headline ALMA per evaluated round, mean and 95% t-band over seeds (the tables' interval),
    one panel per setting, one line per algorithm; None (with a note) for a single round."""
    if not varies([x["round"] for r in rows for x in evaluated_rounds(r["history"])]):
        log.warning("figure ALMA per round skipped: one evaluated round, so its x axis would not vary")
        return None
    key = headline_key(rows)
    grouped = panels(rows, axes, ("algorithm", "seed"))
    fig, axs = grid(len(grouped))
    for ax, (cell, members) in zip(axs, grouped.items(), strict=False):
        for alg in algorithms(members):
            runs = [evaluated_rounds(r["history"]) for r in members if algorithm_of(r) == alg]
            rounds, curves = round_matrix(runs, lambda x: x.get(key))
            mean, half = _mean_band(curves)
            ax.plot(rounds, mean, label=alg, **style[alg].line())
            band = np.isfinite(half)
            ax.fill_between(
                rounds[band], (mean - half)[band], (mean + half)[band], alpha=0.15, color=style[alg].color
            )
        label_panel(ax, cell)
        ax.set(xlabel="round", ylabel=_headline_label(key))
        integer_rounds(ax)
    figure_legend(fig, axs)
    return save(fig, path)


def cumulative_steps(rounds: list[Row]) -> list[Row]:
    """The rounds with ``cum_steps``: optimiser steps per participating client (private +
    transfer set) up to and including each round; NaN from a round without step counts on."""
    total, out = 0.0, []
    for x in sorted(rounds, key=lambda x: x["round"]):
        steps = round_steps(x)
        total += sum(steps) if steps is not None else np.nan
        out.append({**x, "cum_steps": total})
    return out


def _mean_band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (round): mean and 95% t-interval half-width over the runs with a value."""
    cols = [mean_ci([v for v in col if np.isfinite(v)]) for col in matrix.T]
    return np.array([c[0] for c in cols]), np.array([c[2] for c in cols])


def alma_vs_steps_figure(
    rows: list[Row], axes: list[str], path: Path, style: dict[str, Style]
) -> Path | None:
    """Headline ALMA (mean over seeds, 95% CI band) against cumulative optimiser steps per client,
    one panel per cell, one line per algorithm: has each method plateaued, and at what compute?
    None (with a note) when the runs record no step counts."""
    if not any(round_steps(x) is not None for r in rows for x in r["history"]["rounds"]):
        log.warning("figure ALMA vs optimiser steps skipped: the runs record no step counts")
        return None
    key = headline_key(rows)
    grouped = panels(rows, axes, ("algorithm", "seed"))
    fig, axs = grid(len(grouped))
    for ax, (cell, members) in zip(axs, grouped.items(), strict=False):
        for alg in algorithms(members):
            runs = [cumulative_steps(r["history"]["rounds"]) for r in members if algorithm_of(r) == alg]
            _, steps = round_matrix(runs, lambda x: x["cum_steps"])
            _, alma = round_matrix(runs, lambda x: x.get(key) if x.get("evaluated", True) else None)
            x, (y, half) = nan_mean_std(steps)[0], _mean_band(alma)
            shown = np.isfinite(x) & np.isfinite(y)
            ax.plot(x[shown], y[shown], label=alg, **style[alg].line())
            band = shown & np.isfinite(half)
            ax.fill_between(x[band], (y - half)[band], (y + half)[band], alpha=0.15, color=style[alg].color)
        label_panel(ax, cell)
        ax.set(xlabel="optimiser steps per client (private + transfer)", ylabel=_headline_label(key))
    figure_legend(fig, axs)
    return save(fig, path)


def final_vs_axis_figure(
    rows: list[Row], axes: list[str], axis: str, path: Path, style: dict[str, Style]
) -> Path:
    """Final headline ALMA, mean and 95% CI over seeds, against one numeric axis (log x when its
    values span 20x or more)."""
    grouped = panels(rows, axes, ("algorithm", "seed", axis))
    fig, axs = grid(len(grouped))
    for ax, (key, members) in zip(axs, grouped.items(), strict=False):
        for alg in algorithms(members):
            mine = [r for r in members if algorithm_of(r) == alg]
            final_alma_errorbar(ax, mine, lambda r, a=axis: r["axes"][a], alg, style[alg])
        ticks = sorted({r["axes"][axis] for r in members})
        log_x = min(ticks) > 0 and max(ticks) / min(ticks) >= 20
        label = AXIS_LABELS.get(axis, axis) + (" (log scale)" if log_x else "")
        label_panel(ax, key)
        ax.set(
            xscale="log" if log_x else "linear",
            xlabel=label,
            ylabel="final " + _headline_label(headline_key(rows)),
        )
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    figure_legend(fig, axs)
    return save(fig, path)


def client_accuracy_figure(rows: list[Row], path: Path, style: dict[str, Style]) -> Path:
    """Every client's final local test accuracy, all runs, one column per algorithm (bar: mean)."""
    algs = algorithms(rows)
    fig, ax = new_figure(max(5.0, 1.2 * len(algs) + 2), 4.0)
    for i, alg in enumerate(algs):
        accs = [
            acc
            for r in rows
            if algorithm_of(r) == alg
            for acc in r["history"]["rounds"][-1]["client_acc"].values()
            if acc is not None
        ]
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, size=len(accs))
        ax.scatter(i + jitter, accs, s=6, alpha=0.4, color=style[alg].color, marker=style[alg].marker)
        ax.hlines(np.mean(accs), i - 0.3, i + 0.3, color="black")
    ax.set_xticks(range(len(algs)), algs)
    ax.set(ylabel="final local test accuracy per client (all runs; bar: mean)")
    accuracy_limits(ax)
    return save(fig, path)


def kb_axis(ax: Axes, values: list[float]) -> str:
    """After plotting: a linear kB axis from 0, or a logarithmic one (plain numbers as labels)
    when the positive values span LOG_RANGE or more; returns the axis label."""
    positive = [v for v in values if v > 0]
    if len(positive) < 2 or max(positive) / min(positive) < LOG_RANGE:
        ax.set_ylim(bottom=0)
        return "kB per round (up + down, all clients)"
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 10, 20, 50, 100, ...
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    return "kB per round (up + down, all clients; log scale)"


def bytes_figure(rows: list[Row], path: Path, style: dict[str, Style]) -> Path:
    """Mean kB per round of each algorithm; an algorithm that sends nothing is named as such
    (and, on a log axis, appears in the legend only)."""
    fig, ax = new_figure(7.0, 4.0)
    values: list[float] = []
    for alg in algorithms(rows):
        runs = [r["history"]["rounds"] for r in rows if algorithm_of(r) == alg]
        rounds, per_round = round_matrix(runs, lambda x: (x["bytes_up"] + x["bytes_down"]) / 1e3)
        mean = nan_mean_std(per_round)[0]
        silent = bool(np.all(np.nan_to_num(mean) == 0))
        ax.plot(rounds, mean, label=alg + (" (sends nothing)" if silent else ""), **style[alg].line())
        values += [float(v) for v in mean if np.isfinite(v)]
    label = kb_axis(ax, values)
    ax.set(xlabel="round", ylabel=label)
    integer_rounds(ax)
    legend_outside(ax)
    return save(fig, path)


def chosen_run_figures(chosen: Row, out: Path) -> dict[str, Path]:
    """The chosen run's last weight matrix and, when its data is here, its partition."""
    last = chosen["history"]["rounds"][-1]
    settings = ", ".join(f"{k}={v}" for k, v in chosen["axes"].items() if k != "algorithm")
    what = f"{algorithm_of(chosen)}" + (f", {settings}" if settings else "")
    figures = {f"weights ({what}, round {last['round']})": weights_figure(last, out / "weights.png")}
    try:
        figures["partition"] = run_partition_figure(chosen["config"], out / "partition.png")
    except ConfigError as why:  # the data is not on this machine: the other figures still stand
        logging.getLogger("flwr.fedkd").warning("partition figure skipped: %s", why)
    return figures


def sweep_figures(rows: list[Row], axes: list[str], out: Path, chosen: Row | None) -> dict[str, Path]:
    """Every figure of the sweep, by caption (report.md uses it as the figure's text)."""
    style = styles_for(algorithms(rows))
    figures: dict[str, Path | None] = {
        "ALMA per round": alma_per_round_figure(rows, axes, out / "alma_per_round.png", style),
        "ALMA vs optimiser steps": alma_vs_steps_figure(rows, axes, out / "alma_vs_steps.png", style),
    }
    for axis in numeric_axes(rows, axes):
        figures[f"final ALMA vs {axis}"] = final_vs_axis_figure(
            rows, axes, axis, out / f"alma_vs_{axis}.png", style
        )
    figures["per-client accuracy"] = client_accuracy_figure(rows, out / "client_accuracy.png", style)
    figures["bytes per round (mean over runs)"] = bytes_figure(rows, out / "bytes_per_round.png", style)
    if chosen is not None:
        figures.update(chosen_run_figures(chosen, out))
    return {name: path for name, path in figures.items() if path is not None}
