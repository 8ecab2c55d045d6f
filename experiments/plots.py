"""Figures (matplotlib, headless). Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def partition_heatmap(hist: np.ndarray, path: str | Path, title: str) -> Path:
    """Clients x classes sample counts. hist: (K, C) int."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k, c = hist.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * c + 2), max(3.0, min(0.3 * k + 1.5, 20))), dpi=120)
    image = ax.imshow(hist, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("client (partition id)")
    ax.set_xticks(range(c))
    if k <= 40:
        ax.set_yticks(range(k))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="private training samples")
    if k * c <= 400:
        for (row, col), value in np.ndenumerate(hist):
            ax.text(
                col,
                row,
                str(int(value)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value < hist.max() / 2 else "black",
            )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
