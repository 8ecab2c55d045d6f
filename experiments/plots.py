"""Figures (matplotlib, headless). Each function writes one PNG and returns its path."""

from __future__ import annotations

import logging
import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

from fedkd.config import ConfigError  # noqa: E402


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
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """PNG for the report, PDF for papers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def weights_heatmap(weights: list[list[float]], path: str | Path, title: str) -> Path:
    """Row k: how much client k learned from each client j (the fusion weight matrix)."""
    w = np.asarray(weights)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    image = ax.imshow(w, cmap="magma", vmin=0.0, vmax=max(float(w.max()), 1e-9))
    ax.set_xlabel("teacher client j")
    ax.set_ylabel("student client k")
    ax.set_title(textwrap.fill(title, 48), fontsize=9)
    fig.colorbar(image, ax=ax, label="weight w_kj")
    return _save(fig, Path(path))


def evaluated_rounds(history: dict) -> list[dict]:
    """The rounds that were evaluated (every ``eval-every`` rounds and the last one)."""
    return [r for r in history["rounds"] if r.get("evaluated", True)]


def run_figures(history: dict, out: str | Path) -> dict[str, Path]:
    """Figures of one results.json: ALMA per round, per-client accuracy, weights, bytes."""
    out = Path(out)
    rounds = evaluated_rounds(history)
    x = [r["round"] for r in rounds]
    alg = history["config"]["fusion"]["algorithm"]
    figures = {}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(x, [r["alma"] for r in rounds], marker="o", label="ALMA (mean)")
    ax.plot(x, [r["alma_min"] for r in rounds], linestyle="--", label="ALMA (worst client)")
    ax.plot(x, [r["global_acc"] for r in rounds], linestyle=":", label="global test accuracy")
    ax.set(xlabel="round", ylabel="accuracy", title=f"{alg}: accuracy per round", ylim=(0, 1))
    ax.legend()
    figures["accuracy per round"] = _save(fig, out / "accuracy_per_round.png")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for pid in sorted(rounds[-1]["client_acc"], key=int):
        ax.plot(x, [r["client_acc"].get(pid, np.nan) for r in rounds], alpha=0.7, label=f"client {pid}")
    ax.set(xlabel="round", ylabel="local test accuracy", title=f"{alg}: per-client accuracy", ylim=(0, 1))
    ax.legend(fontsize=6, ncol=2)
    figures["per-client accuracy"] = _save(fig, out / "client_accuracy.png")
    rounds, x = history["rounds"], [r["round"] for r in history["rounds"]]  # every round from here on
    figures["weights"] = weights_heatmap(
        rounds[-1]["weights"], out / "weights.png", f"{alg}: who learned from whom"
    )
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.bar(np.array(x) - 0.2, [r["bytes_up"] / 1e3 for r in rounds], width=0.4, label="up")
    ax.bar(np.array(x) + 0.2, [r["bytes_down"] / 1e3 for r in rounds], width=0.4, label="down")
    ax.set(xlabel="round", ylabel="kB per round (all clients)", title=f"{alg}: communication")
    ax.legend()
    figures["bytes per round"] = _save(fig, out / "bytes_per_round.png")
    return figures


AXIS_LABELS = {
    "alpha": "Dirichlet alpha (larger = more IID)",
    "noise-multiplier": "noise multiplier (per-entry std / clip)",
    "max-client-samples": "private samples per client (cap)",
    "num-clients": "clients",
}


def numeric_axes(rows: list[dict], axes: list[str]) -> list[str]:
    """Axes (not seed or algorithm) with several numeric values: each gets a final-vs-axis plot."""
    found = []
    for axis in axes:
        values = {r["axes"].get(axis) for r in rows}
        if (
            axis not in ("seed", "algorithm")
            and len(values) > 1
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            found.append(axis)
    return found


def pick_fusion_run(rows: list[dict]) -> dict | None:
    """The run whose weight matrix the report shows: the first KnFu run, else the first run."""
    for row in rows:
        if row["axes"].get("algorithm", row["config"]["algorithm"]).startswith("knfu"):
            return row
    return rows[0] if rows else None


def _algorithm(row: dict) -> str:
    return row["axes"].get("algorithm", row["config"]["algorithm"])


def _panels(rows: list[dict], axes: list[str], exclude: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Rows grouped by every axis except the excluded ones (one subplot each, at most 12)."""
    keys = [a for a in axes if a not in exclude]
    panels: dict[tuple, list[dict]] = {}
    for row in rows:
        panels.setdefault(tuple((k, row["axes"].get(k)) for k in keys), []).append(row)
    return dict(list(sorted(panels.items(), key=lambda kv: str(kv[0])))[:12])


def _grid(n: int):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axs = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), dpi=110, squeeze=False)
    for ax in axs.flat[n:]:
        ax.axis("off")
    return fig, list(axs.flat)


def _title(key: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in key) or "all runs"


def _final_alma_errorbar(ax, rows: list[dict], x_of, label: str, colour: str) -> None:
    """Mean ± std over seeds of final ALMA at each x (x_of(row) gives a run's x)."""
    xs = sorted({x_of(r) for r in rows})
    finals = [[r["final"]["alma"] for r in rows if x_of(r) == x] for x in xs]
    ax.errorbar(
        xs,
        [np.mean(f) for f in finals],
        yerr=[np.std(f) for f in finals],
        marker="o",
        capsize=3,
        label=label,
        color=colour,
    )


def _colours(rows: list[dict]) -> dict[str, str]:
    """One colour per algorithm across every panel and figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {alg: cycle[i % len(cycle)] for i, alg in enumerate(sorted({_algorithm(r) for r in rows}))}


def round_matrix(runs: list[list[dict]], value) -> tuple[np.ndarray, np.ndarray]:
    """(rounds,) and (runs, rounds) of ``value(round record)``; NaN where a run has no such round
    (it stopped early at max-epsilon, or that round was not evaluated)."""
    rounds = np.array(sorted({x["round"] for run in runs for x in run}))
    matrix = np.full((len(runs), len(rounds)), np.nan)
    for i, run in enumerate(runs):
        for x in run:
            v = value(x)
            matrix[i, np.searchsorted(rounds, x["round"])] = np.nan if v is None else v
    return rounds, matrix


def nan_mean_std(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value at all: NaN
        return np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0)


def sweep_figures(rows: list[dict], axes: list[str], out: Path, chosen: dict | None) -> dict[str, Path]:
    figures: dict[str, Path] = {}
    colour = _colours(rows)
    panels = _panels(rows, axes, ("algorithm", "seed"))
    fig, axs = _grid(len(panels))
    for ax, (key, members) in zip(axs, panels.items(), strict=False):
        for alg in sorted({_algorithm(r) for r in members}):
            runs = [evaluated_rounds(r["history"]) for r in members if _algorithm(r) == alg]
            rounds, curves = round_matrix(runs, lambda x: x["alma"])
            mean, std = nan_mean_std(curves)
            ax.plot(rounds, mean, marker=".", label=alg, color=colour[alg])
            ax.fill_between(rounds, mean - std, mean + std, alpha=0.15, color=colour[alg])
        ax.set(title=_title(key), xlabel="round", ylabel="ALMA (mean ± std over seeds)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    figures["ALMA per round"] = _save(fig, out / "alma_per_round.png")

    for axis in numeric_axes(rows, axes):
        panels = _panels(rows, axes, ("algorithm", "seed", axis))
        fig, axs = _grid(len(panels))
        for ax, (key, members) in zip(axs, panels.items(), strict=False):
            for alg in sorted({_algorithm(r) for r in members}):
                mine = [r for r in members if _algorithm(r) == alg]
                _final_alma_errorbar(ax, mine, lambda r, a=axis: r["axes"][a], alg, colour[alg])
            ticks = sorted({r["axes"][axis] for r in members})
            log_x = min(ticks) > 0 and max(ticks) / min(ticks) >= 20
            ax.set(
                xscale="log" if log_x else "linear",
                title=_title(key),
                xlabel=AXIS_LABELS.get(axis, axis) + (" (log scale)" if log_x else ""),
                ylabel="final ALMA (mean ± std over seeds)",
            )
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.legend(fontsize=7)
        figures[f"final ALMA vs {axis}"] = _save(fig, out / f"alma_vs_{axis}.png")

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    algs = sorted({_algorithm(r) for r in rows})
    for i, alg in enumerate(algs):
        accs = [
            acc
            for r in rows
            if _algorithm(r) == alg
            for acc in r["history"]["rounds"][-1]["client_acc"].values()
        ]
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, size=len(accs))
        ax.scatter(i + jitter, accs, s=6, alpha=0.4, color=colour[alg])
        ax.hlines(np.mean(accs), i - 0.3, i + 0.3, color="black")
    ax.set_xticks(range(len(algs)), algs)
    ax.set(ylabel="final local test accuracy per client", title="per-client accuracy (all runs; bar = mean)")
    figures["per-client accuracy"] = _save(fig, out / "client_accuracy.png")

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for alg in algs:
        runs = [r["history"]["rounds"] for r in rows if _algorithm(r) == alg]
        rounds, per_round = round_matrix(runs, lambda x: (x["bytes_up"] + x["bytes_down"]) / 1e3)
        ax.plot(
            rounds,
            nan_mean_std(per_round)[0],
            marker=".",
            label=alg,
            color=colour[alg],
        )
    ax.set(xlabel="round", ylabel="kB per round (up + down, all clients)", title="communication per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("symlog")
    ax.legend(fontsize=7)
    figures["bytes per round"] = _save(fig, out / "bytes_per_round.png")

    if chosen is not None:
        title = f"{_algorithm(chosen)} {_title(tuple(chosen['axes'].items()))}"
        figures["weights"] = weights_heatmap(
            chosen["history"]["rounds"][-1]["weights"], out / "weights.png", title
        )
        try:
            figures["partition"] = _chosen_partition(chosen, out / "partition.png")
        except ConfigError as why:  # the data is not on this machine: the other figures still stand
            logging.getLogger("flwr.fedkd").warning("partition figure skipped: %s", why)
    return figures


def _chosen_partition(row: dict, path: Path) -> Path:
    from fedkd.config import ExperimentConfig
    from fedkd.data.federation import federation
    from fedkd.data.partition import class_histogram

    cfg = ExperimentConfig.from_run_config(row["config"])
    dataset, split = federation(cfg.data, cfg.run.seed)
    hist = class_histogram(dataset.train_y, split, dataset.num_classes)
    out = partition_heatmap(
        hist, path, f"{dataset.name} {cfg.data.partitioner} alpha={cfg.data.alpha}, seed {cfg.run.seed}"
    )
    return out


def _attack_panels(axes, audit: dict) -> None:
    """Membership AUC and label-histogram TV error against the noise multiplier, each with its
    bootstrap 95% band and its no-model baseline. The no-noise release sits at the far left."""
    membership, labels = audit["membership"], audit["label_distribution"]
    noisy = sorted(r["noise_multiplier"] for r in membership if r["noise_multiplier"] > 0)
    at = [noisy[0] / 3, *noisy]  # where "no noise" is drawn on the log axis

    def series(rows, key):
        ordered = sorted(rows, key=lambda r: r["noise_multiplier"])
        return [r[key] for r in ordered]

    ax = axes[0]
    for key, ci, label, colour in (
        ("auc", "auc_ci", "confidence attack", "C0"),
        ("label_only_auc", "label_only_ci", "label-only attack", "C2"),
    ):
        ax.plot(at, series(membership, key), marker="o", color=colour, label=label)
        low, high = zip(*series(membership, ci), strict=True)
        ax.fill_between(at, low, high, color=colour, alpha=0.15)
    ax.axhline(
        membership[0]["class_frequency_auc"], color="C1", linestyle="--", label="no model: class frequency"
    )
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set(ylabel="membership AUC (95% CI)", title="membership inference")
    ax = axes[1]
    ax.plot(at, series(labels, "tv"), marker="o", label="EPD as histogram")
    low, high = zip(*series(labels, "tv_ci"), strict=True)
    ax.fill_between(at, low, high, alpha=0.2)
    ax.axhline(labels[0]["tv_prior"], color="C1", linestyle="--", label="blind: population prior")
    ax.axhline(labels[0]["tv_uniform"], color="grey", linestyle=":", label="blind: uniform")
    ax.set(ylabel="total-variation error (95% CI)", title="label-distribution inference (lower: leaks more)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(at, ["none", *(f"{m:g}" for m in noisy)])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("noise multiplier (per-entry std / clip)")
        ax.legend(fontsize=7, loc="best")


def audit_figure(audit: dict, path: str | Path) -> Path:
    """Both attacks against the noise multiplier (``fedkd audit``)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    _attack_panels(axes, audit)
    return _save(fig, Path(path))


def privacy_tradeoff(rows: list[dict], audit: dict, path: str | Path) -> Path:
    """Final ALMA per algorithm (tick labels carry the epsilon each multiplier costs after the
    run's rounds), then both attacks, all against the noise multiplier."""
    from fedkd.config import ExperimentConfig
    from fedkd.privacy import PrivacyLedger, release_rows

    noisy = [r for r in rows if r["axes"].get("mechanism", r["config"]["mechanism"]) != "none"]
    clean = [r for r in rows if r["axes"].get("mechanism", r["config"]["mechanism"]) == "none"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), dpi=120)
    ax = axes[0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, alg in zip(colours, sorted({_algorithm(r) for r in noisy}), strict=False):
        mine = [r for r in noisy if _algorithm(r) == alg]
        _final_alma_errorbar(ax, mine, lambda r: r["config"]["noise-multiplier"], alg, colour)
        base = [r["final"]["alma"] for r in clean if _algorithm(r) == alg]
        if base:
            ax.axhline(np.mean(base), color=colour, linestyle="--", linewidth=1, label=f"{alg}, no noise")
    ticks = sorted({r["config"]["noise-multiplier"] for r in noisy})
    cfg = ExperimentConfig.from_run_config(noisy[0]["config"])
    labels = []
    for t in ticks:
        ledger = PrivacyLedger(cfg.with_overrides({"noise-multiplier": t}).privacy, release_rows(cfg))
        labels.append(f"{t:g}\neps={ledger.epsilon_for(cfg.run.rounds):.3g}")
    ax.set_xscale("log")
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    model = f"{cfg.privacy.sensitivity_model}-level, delta={cfg.privacy.delta:g}"
    ax.set(
        xlabel=f"noise multiplier; epsilon after {cfg.run.rounds} rounds ({model})",
        ylabel="final ALMA (mean ± std over seeds)",
        title="accuracy",
    )
    ax.legend(fontsize=7, loc="lower left")
    _attack_panels(axes[1:], audit)
    return _save(fig, Path(path))
