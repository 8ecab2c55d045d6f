"""The fusion weight matrix of one round: who learned from whom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures.common import client_ticks, new_figure, save


def weights_figure(round_record: dict[str, Any], path: str | Path) -> Path:
    """Row k (student) over column j (teacher): how much client k learned from client j in that
    round, over the round's participants."""
    w = np.asarray(round_record["weights"], dtype=np.float64)
    k = w.shape[0]
    ids = round_record.get("participants")
    ids = ids if ids is not None and len(ids) == k else None  # older files: every registered client
    side = min(4.0 + 0.12 * k, 10.0)
    fig, ax = new_figure(side + 1.2, side)
    image = ax.imshow(w, cmap="magma", vmin=0.0, vmax=max(float(np.nanmax(w)) if w.size else 0.0, 1e-9))
    client_ticks(ax, k, "x", ids)
    client_ticks(ax, k, "y", ids)
    ax.set_xlabel("teacher client j")
    ax.set_ylabel("student client k")
    fig.colorbar(image, ax=ax, label="fusion weight $w_{kj}$")
    return save(fig, path)
