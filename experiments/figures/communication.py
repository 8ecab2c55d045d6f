"""ALMA against communication: one point per method and compression level, for `fedkd report`.

A point is the runs of one (algorithm, compression level) in one panel (the other non-seed axes),
at x = bytes per round (mean over rounds, then over seeds: left the uplink, ``bytes_up``, what
compression acts on; right up + down) and y = final headline ALMA (mean and 95% CI over seeds, as
in the tables). Runs that send nothing (local) are a dashed line: the accuracy to beat at zero
bytes. With one byte count in all (nothing varies the bytes) the figure says nothing and is skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

from experiments.figures.common import Style, save, styles_for, varies
from experiments.figures.panels import (
    algorithm_of,
    algorithms,
    final_value,
    headline_key,
    label_panel,
    panels,
)
from experiments.stats import mean_ci

COMPRESSION_AXES = ("compression", "compression-k", "compression-bits")
MARKERS = {"float32": "o", "top-": "s", "8-bit": "^", "4-bit": "v", "2-bit": "D"}
log = logging.getLogger("flwr.fedkd")


def compression_label(config: dict) -> str:
    """float32, top-k or b-bit: how a run's prediction uploads travel."""
    method = config.get("compression", "none")
    if method == "topk":
        return f"top-{config.get('compression-k')}"
    if method == "quant":
        return f"{config.get('compression-bits')}-bit"
    return "float32"


def _marker(label: str) -> str:
    return next((m for prefix, m in MARKERS.items() if label.startswith(prefix)), "o")


def _bytes_per_round(row: dict, total: bool) -> float:
    rounds = row["history"]["rounds"]
    return float(np.mean([r["bytes_up"] + (r["bytes_down"] if total else 0) for r in rounds]))


def comm_points(members: list[dict], total: bool) -> list[dict]:
    """Runs of one panel -> one point per (algorithm, compression level): mean bytes per round,
    final headline ALMA mean and 95% CI half-width over seeds, and how many runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in members:
        groups.setdefault((algorithm_of(row), compression_label(row["config"])), []).append(row)
    points = []
    key = headline_key(members)
    for (alg, label), runs in sorted(groups.items()):
        mean, _, half = mean_ci([final_value(r, key) for r in runs])
        points.append(
            {
                "algorithm": alg,
                "compression": label,
                "bytes": float(np.mean([_bytes_per_round(r, total) for r in runs])),
                "alma": mean,
                "alma_ci95": 0.0 if np.isnan(half) else half,
                "runs": len(runs),
            }
        )
    return points


def _draw_points(ax: Axes, points: list[dict], style: dict[str, Style]) -> None:
    """One marker per (algorithm, compression level); a dashed line for runs that send nothing."""
    for point in points:
        if point["bytes"] <= 0:
            ax.axhline(point["alma"], linestyle="--", color=style[point["algorithm"]].color, linewidth=1)
            ax.annotate(
                f"{point['algorithm']} (no exchange)",
                (0.01, point["alma"]),
                fontsize=7,
                xycoords=("axes fraction", "data"),
                va="bottom",
            )
            continue
        ax.errorbar(
            point["bytes"] / 1e3,
            point["alma"],
            yerr=point["alma_ci95"],
            marker=_marker(point["compression"]),
            color=style[point["algorithm"]].color,
            capsize=3,
            linestyle="none",
        )
        ax.annotate(
            f"{point['algorithm']} {point['compression']}",
            (point["bytes"] / 1e3, point["alma"]),
            fontsize=6,
            xytext=(4, 3),
            textcoords="offset points",
        )


def alma_vs_bytes(rows: list[dict], axes: list[str], path: str | Path) -> Path | None:
    """The figure (one row of two plots per panel); None when no run sent anything, or (with a
    note) when every run that sends sends the same bytes per round."""
    if not any(_bytes_per_round(r, total=True) > 0 for r in rows):
        return None
    if not varies([_bytes_per_round(r, total=True) for r in rows if _bytes_per_round(r, total=True) > 0]):
        log.warning("figure ALMA vs bytes skipped: every run that sends sends the same bytes per round")
        return None
    style = styles_for(algorithms(rows))
    grouped = panels(rows, axes, ("algorithm", "seed", *COMPRESSION_AXES))
    fig, grid = plt.subplots(len(grouped), 2, figsize=(11, 4.2 * len(grouped)), dpi=110, squeeze=False)
    for (key, members), pair in zip(grouped.items(), grid, strict=True):
        for ax, total in zip(pair, (False, True), strict=True):
            _draw_points(ax, comm_points(members, total), style)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only: they never overlap
            label_panel(ax, key)
            what = "up + down" if total else "uplink (bytes_up)"
            ax.set(
                xlabel=f"kB per round, all clients, {what} (log scale)",
                ylabel=f"final {'matched ' if headline_key(members) == 'alma_matched' else ''}ALMA"
                " (mean and 95% CI over seeds)",
            )
    return save(fig, Path(path))
