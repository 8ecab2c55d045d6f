"""What every figure shares: the headless backend, paper style, saving, series styles, client
ticks, legends.

Figures go into papers unchanged: no titles inside (the caption is the paper's; panels of a grid
carry only the setting they show), TrueType fonts in PDF and PS (venues reject Type 3), PNGs at
300 dpi unless ``--dpi`` says otherwise, and series told apart by colour (Okabe-Ito, safe for
colour-blind readers), marker and line style together, so that no series hides another.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MAX_LABELLED_CLIENTS = 30  # more clients than this: integer ticks chosen by matplotlib, not every one
DPI = 300  # PNG resolution unless --dpi says otherwise (the PDF is vector)
# Okabe & Ito (2008): told apart with any colour vision; the yellow, faint on white, comes last
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
plt.rcParams.update(
    {
        "pdf.fonttype": 42,  # TrueType, not Type 3
        "ps.fonttype": 42,
        "savefig.dpi": DPI,
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    }
)


@contextmanager
def resolution(dpi: int) -> Iterator[None]:
    """PNGs saved inside the block get ``dpi`` dots per inch."""
    with matplotlib.rc_context({"savefig.dpi": dpi}):
        yield


@dataclass(frozen=True)
class Style:
    """How one series (an algorithm) is drawn, the same in every panel and figure."""

    color: str
    marker: str
    linestyle: str

    def line(self) -> dict[str, Any]:
        """Keyword arguments for ``ax.plot`` / ``ax.errorbar``: hollow markers, so that series on
        the same points still show each marker's outline."""
        return {
            "color": self.color,
            "marker": self.marker,
            "linestyle": self.linestyle,
            "markerfacecolor": "none",
            "markersize": 7,
        }


def new_figure(width: float = 6.0, height: float = 4.0) -> tuple[Figure, Axes]:
    return plt.subplots(figsize=(width, height), dpi=120)


def save(fig: Figure, path: str | Path) -> Path:
    """PNG for the report, PDF for papers, each written whole or not at all (temp file, rename);
    ``tight`` keeps legends placed outside the axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for target in (path, path.with_suffix(".pdf")):
        partial = target.with_name(f".{target.name}.partial")
        fig.savefig(partial, bbox_inches="tight", format=target.suffix[1:])
        partial.replace(target)
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


def styles_for(names: list[str]) -> dict[str, Style]:
    """One style per name (algorithm): colour, marker and line style all differ between any two
    of the first eight names, so two series on the same values still show both."""
    return {
        name: Style(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
        for i, name in enumerate(sorted(names))
    }


def varies(values: list[float]) -> bool:
    """More than one distinct finite value: an axis worth drawing."""
    return len({float(v) for v in values if v == v and abs(v) != float("inf")}) > 1


def accuracy_limits(ax: Axes) -> None:
    """Accuracy lives in [0, 1]; leave room above 1 so a perfect client is not cut off."""
    ax.set_ylim(0.0, 1.04)
