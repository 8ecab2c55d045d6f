"""The figures of one run (``fedkd plot``): accuracy per round, each client's accuracy, the last
round's weight matrix and the bytes sent per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures.common import (
    accuracy_limits,
    integer_rounds,
    legend_outside,
    new_figure,
    save,
)
from experiments.figures.weights import weights_figure
from fedkd.models import architecture_for


def evaluated_rounds(history: dict[str, Any]) -> list[dict[str, Any]]:
    """The rounds that were evaluated (every ``eval-every`` rounds and the last one)."""
    return [r for r in history["rounds"] if r.get("evaluated", True)]


def describe_run(history: dict[str, Any]) -> str:
    """The run in a few words, for captions: algorithm, data, clients, split."""
    cfg = history["config"]
    data = cfg["data"]
    return (
        f"{cfg['fusion']['algorithm']} on {data['dataset']}, {data['num_clients']} clients, "
        f"{data['partitioner']} alpha={data['alpha']:g}"
    )


def client_architectures(history: dict[str, Any]) -> dict[int, str]:
    """Partition id -> its model architecture, from the run's config."""
    models, k = history["config"]["model"]["models"], history["config"]["data"]["num_clients"]
    return {pid: architecture_for(models, pid, k) for pid in range(k)}


def accuracy_figure(history: dict[str, Any], path: Path) -> Path:
    """Mean, worst-client and global accuracy per evaluated round."""
    rounds = evaluated_rounds(history)
    x = [r["round"] for r in rounds]
    fig, ax = new_figure()
    ax.plot(x, [r["alma"] for r in rounds], marker="o", label="ALMA (mean over clients)")
    ax.plot(x, [r["alma_min"] for r in rounds], linestyle="--", label="ALMA (worst client)")
    ax.plot(x, [r["global_acc"] for r in rounds], linestyle=":", label="global test accuracy")
    ax.set(xlabel="round", ylabel="accuracy")
    accuracy_limits(ax)
    integer_rounds(ax)
    legend_outside(ax)
    return save(fig, path)


def client_accuracy_figure(history: dict[str, Any], path: Path) -> Path:
    """Each client's local test accuracy per evaluated round; the legend names its architecture."""
    rounds = evaluated_rounds(history)
    x = [r["round"] for r in rounds]
    arch = client_architectures(history)
    fig, ax = new_figure(7.5, 4.5)
    for pid in sorted(rounds[-1]["client_acc"], key=int):
        values = [r["client_acc"].get(pid, np.nan) for r in rounds]
        ax.plot(x, values, marker=".", alpha=0.8, label=f"client {pid} ({arch.get(int(pid), '?')})")
    ax.set(xlabel="round", ylabel="local test accuracy")
    accuracy_limits(ax)
    integer_rounds(ax)
    legend_outside(ax, fontsize=8, columns=2 if len(rounds[-1]["client_acc"]) > 12 else 1)
    return save(fig, path)


def bytes_figure(history: dict[str, Any], path: Path) -> Path:
    """kB sent up (uploads) and down (targets or models) per round, all clients together."""
    rounds = history["rounds"]
    x = np.array([r["round"] for r in rounds])
    fig, ax = new_figure()
    ax.bar(x - 0.2, [r["bytes_up"] / 1e3 for r in rounds], width=0.4, label="up (clients to server)")
    ax.bar(x + 0.2, [r["bytes_down"] / 1e3 for r in rounds], width=0.4, label="down (server to clients)")
    ax.set(xlabel="round", ylabel="kB per round (all clients)")
    integer_rounds(ax)
    legend_outside(ax)
    return save(fig, path)


def run_figures(history: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Every figure of one run (its results with rounds, see fedkd.results_files.load_results)."""
    out = Path(out)
    last = history["rounds"][-1]
    return {
        "accuracy per round": accuracy_figure(history, out / "accuracy_per_round.png"),
        "per-client accuracy": client_accuracy_figure(history, out / "client_accuracy.png"),
        f"weights ({describe_run(history)}, round {last['round']})": weights_figure(
            last, out / "weights.png"
        ),
        "bytes per round": bytes_figure(history, out / "bytes_per_round.png"),
    }
