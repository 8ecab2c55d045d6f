"""What every figure shares: the headless backend, saving, colours, client ticks, legends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MAX_LABELLED_CLIENTS = 30  # more clients than this: integer ticks chosen by matplotlib, not every one


def new_figure(width: float = 6.0, height: float = 4.0) -> tuple[Figure, Axes]:
    return plt.subplots(figsize=(width, height), dpi=120)


def save(fig: Figure, path: str | Path) -> Path:
    """PNG for the report, PDF for papers; ``tight`` keeps legends placed outside the axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return path


def client_ticks(ax: Axes, count: int, axis: str = "x", ids: list[int] | None = None) -> None:
    """Client ids (partition ids; ``ids``: the id at each position, when not 0..count-1) on
    ``axis``: every id when they fit, else whole-number positions."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    if count <= MAX_LABELLED_CLIENTS:
        (ax.set_xticks if axis == "x" else ax.set_yticks)(range(count), labels=ids)
    else:
        target.set_major_locator(MaxNLocator(integer=True))


def integer_rounds(ax: Axes) -> None:
    """Rounds are whole numbers."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax: Axes, fontsize: float = 8, columns: int = 1) -> None:
    """A legend to the right of the axes: it never covers data."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize, ncol=columns
    )


def figure_legend(fig: Figure, axes: list[Axes], fontsize: float = 8) -> None:
    """One legend for all panels, right of the figure: every label once, never over data."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=fontsize
        )


def colours_for(names: list[str]) -> dict[str, str]:
    """One colour per name (algorithm), the same in every panel and figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(sorted(names))}


def accuracy_limits(ax: Axes) -> None:
    """Accuracy lives in [0, 1]; leave room above 1 so a perfect client is not cut off."""
    ax.set_ylim(0.0, 1.04)
