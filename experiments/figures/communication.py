"""ALMA against communication: one point per method and compression level, for `fedkd report`.

A point is the runs of one (algorithm, compression level) in one panel (the other non-seed axes),
at x = bytes per round (mean over rounds, then over seeds: left the uplink, ``bytes_up``, what
compression acts on; right up + down) and y = final ALMA (mean ± std over seeds). Runs that send
nothing (local) are a dashed line: the accuracy to beat at zero bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

from experiments.figures.common import colours_for, save
from experiments.figures.panels import algorithm_of, algorithms, panel_title, panels

COMPRESSION_AXES = ("compression", "compression-k", "compression-bits")
MARKERS = {"float32": "o", "top-": "s", "8-bit": "^", "4-bit": "v", "2-bit": "D"}


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
    final ALMA mean and std over seeds, and how many runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in members:
        groups.setdefault((algorithm_of(row), compression_label(row["config"])), []).append(row)
    points = []
    for (alg, label), runs in sorted(groups.items()):
        finals = [r["final"]["alma"] for r in runs]
        points.append(
            {
                "algorithm": alg,
                "compression": label,
                "bytes": float(np.mean([_bytes_per_round(r, total) for r in runs])),
                "alma": float(np.mean(finals)),
                "alma_std": float(np.std(finals)),
                "runs": len(runs),
            }
        )
    return points


def _draw_points(ax: Axes, points: list[dict], colour: dict[str, str]) -> None:
    """One marker per (algorithm, compression level); a dashed line for runs that send nothing."""
    for point in points:
        if point["bytes"] <= 0:
            ax.axhline(point["alma"], linestyle="--", color=colour[point["algorithm"]], linewidth=1)
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
            yerr=point["alma_std"],
            marker=_marker(point["compression"]),
            color=colour[point["algorithm"]],
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
    """The figure (one row of two plots per panel); None when no run sent anything."""
    if not any(_bytes_per_round(r, total=True) > 0 for r in rows):
        return None
    colour = colours_for(algorithms(rows))
    grouped = panels(rows, axes, ("algorithm", "seed", *COMPRESSION_AXES))
    fig, grid = plt.subplots(len(grouped), 2, figsize=(11, 4.2 * len(grouped)), dpi=110, squeeze=False)
    for (key, members), pair in zip(grouped.items(), grid, strict=True):
        for ax, total in zip(pair, (False, True), strict=True):
            _draw_points(ax, comm_points(members, total), colour)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only: they never overlap
            ax.set(
                title=panel_title(key) + (" | up + down" if total else " | uplink (bytes_up)"),
                xlabel="kB per round, all clients (log scale)",
                ylabel="final ALMA (mean ± std over seeds)",
            )
    return save(fig, Path(path))
