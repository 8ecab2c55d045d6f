"""How the private data is split: clients x classes sample counts, classes by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures.common import client_ticks, new_figure, save
from fedkd.config import ExperimentConfig
from fedkd.data.federation import federation
from fedkd.data.partition import class_histogram

ANNOTATE_CELLS = 400  # write the count in each cell up to this many cells


def class_labels(names: tuple[str, ...], count: int) -> list[str]:
    """The dataset's class names where known (and as many as there are classes), else indices."""
    return list(names) if len(names) == count else [str(c) for c in range(count)]


def partition_figure(hist: np.ndarray, path: str | Path, class_names: tuple[str, ...] = ()) -> Path:
    """Clients x classes sample counts. hist: (K, C) int; ``class_names``: the dataset's (Dataset)."""
    k, c = hist.shape
    labels = class_labels(class_names, c)
    long_names = max(len(name) for name in labels) > 3
    fig, ax = new_figure(max(5.0, 0.55 * c + 2.5), max(3.0, min(0.3 * k + 2.0, 20)))
    image = ax.imshow(hist, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(c), labels, rotation=40 if long_names else 0, ha="right" if long_names else "center")
    client_ticks(ax, k, "y")
    ax.set_xlabel("class")
    ax.set_ylabel("client (partition id)")
    fig.colorbar(image, ax=ax, label="private training samples")
    if k * c <= ANNOTATE_CELLS:
        _annotate(ax, hist)
    return save(fig, path)


def _annotate(ax: Any, hist: np.ndarray) -> None:
    """The count in each cell, dark on light cells and light on dark ones."""
    for (row, col), value in np.ndenumerate(hist):
        colour = "white" if value < hist.max() / 2 else "black"
        ax.text(col, row, str(int(value)), ha="center", va="center", fontsize=7, color=colour)


def run_partition_figure(run_config: dict[str, Any], path: str | Path) -> Path:
    """The partition of a run, rebuilt from its config (the data must be on this machine)."""
    cfg = ExperimentConfig.from_run_config(run_config)
    dataset, split = federation(cfg.data, cfg.run.seed)
    hist = class_histogram(dataset.train_y, split, dataset.num_classes)
    return partition_figure(hist, path, dataset.class_names)
