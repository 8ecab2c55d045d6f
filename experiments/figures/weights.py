"""The fusion weight matrix of one round: who learned from whom."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.figures.common import client_ticks, new_figure, save


def weights_figure(weights: list[list[float]], path: str | Path, what: str, server_round: int) -> Path:
    """Row k (student) over column j (teacher): how much client k learned from client j in round
    ``server_round``. ``what``: the run, in a few words (algorithm and settings)."""
    w = np.asarray(weights, dtype=np.float64)
    k = w.shape[0]
    side = min(4.0 + 0.12 * k, 10.0)
    fig, ax = new_figure(side + 1.2, side)
    image = ax.imshow(w, cmap="magma", vmin=0.0, vmax=max(float(np.nanmax(w)) if w.size else 0.0, 1e-9))
    client_ticks(ax, k, "x")
    client_ticks(ax, k, "y")
    ax.set_xlabel("teacher client j")
    ax.set_ylabel("student client k")
    ax.set_title(f"Who learned from whom, round {server_round}\n{what}", fontsize=9)
    fig.colorbar(image, ax=ax, label="fusion weight $w_{kj}$")
    return save(fig, path)
