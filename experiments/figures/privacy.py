"""Privacy figures: the two attacks against the noise multiplier (``fedkd audit``) and, for a
privacy sweep, accuracy beside them (``fedkd report --audit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import NullLocator

from experiments.figures.common import save, styles_for
from experiments.figures.panels import Row, algorithm_of, final_alma_errorbar, final_value, headline_key
from fedkd.config import ExperimentConfig
from fedkd.privacy import PrivacyLedger, release_rows


def _series(rows: list[dict[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in sorted(rows, key=lambda r: r["noise_multiplier"])]


def membership_panel(ax: Axes, membership: list[dict[str, Any]], at: list[float]) -> None:
    """Confidence and label-only attack AUCs with their bootstrap 95% bands, the no-model
    (class-frequency) reference and chance."""
    for key, ci, label, colour in (
        ("auc", "auc_ci", "confidence attack", "C0"),
        ("label_only_auc", "label_only_ci", "label-only attack", "C2"),
    ):
        ax.plot(at, _series(membership, key), marker="o", color=colour, label=label)
        low, high = zip(*_series(membership, ci), strict=True)
        ax.fill_between(at, low, high, color=colour, alpha=0.15)
    reference = membership[0]["class_frequency_auc"]
    ax.axhline(reference, color="C1", linestyle="--", label="no model: class frequency")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set(ylabel="membership-inference AUC (95% CI)")


def label_panel(ax: Axes, labels: list[dict[str, Any]], at: list[float]) -> None:
    """Label-histogram TV error with its band and the two blind guesses."""
    ax.plot(at, _series(labels, "tv"), marker="o", label="EPD as histogram")
    low, high = zip(*_series(labels, "tv_ci"), strict=True)
    ax.fill_between(at, low, high, alpha=0.2)
    ax.axhline(labels[0]["tv_prior"], color="C1", linestyle="--", label="blind: population prior")
    ax.axhline(labels[0]["tv_uniform"], color="grey", linestyle=":", label="blind: uniform")
    ax.set(ylabel="label-distribution inference: TV error (95% CI; lower leaks more)")


def attack_panels(axes: list[Axes], audit: dict[str, Any]) -> None:
    """Both attacks against the noise multiplier; the no-noise release sits at the far left."""
    membership = audit["membership"]
    noisy = sorted(r["noise_multiplier"] for r in membership if r["noise_multiplier"] > 0)
    at = [noisy[0] / 3, *noisy]  # where "no noise" is drawn on the log axis
    membership_panel(axes[0], membership, at)
    label_panel(axes[1], audit["label_distribution"], at)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(at, ["none", *(f"{m:g}" for m in noisy)])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("noise multiplier (per-entry std / clip)")
        ax.legend(fontsize=7, loc="best")


def audit_figure(audit: dict[str, Any], path: str | Path) -> Path:
    """Both attacks against the noise multiplier (``fedkd audit``)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    attack_panels(list(axes), audit)
    return save(fig, path)


def accuracy_panel(ax: Axes, rows: list[Row]) -> None:
    """Final ALMA per algorithm against the noise multiplier; tick labels carry the epsilon each
    multiplier costs after the run's rounds; dashed: the same algorithm without noise."""
    noisy = [r for r in rows if r["axes"].get("mechanism", r["config"]["mechanism"]) != "none"]
    clean = [r for r in rows if r["axes"].get("mechanism", r["config"]["mechanism"]) == "none"]
    styles = styles_for(sorted({algorithm_of(r) for r in noisy}))
    for alg, style in styles.items():
        mine = [r for r in noisy if algorithm_of(r) == alg]
        final_alma_errorbar(ax, mine, lambda r: r["config"]["noise-multiplier"], alg, style)
        base = [final_value(r, headline_key(rows)) for r in clean if algorithm_of(r) == alg]
        if base:
            ax.axhline(
                np.mean(base), color=style.color, linestyle="--", linewidth=1, label=f"{alg}, no noise"
            )
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
        ylabel="final ALMA (mean and 95% CI over seeds)",
    )
    ax.legend(fontsize=7, loc="lower left")


def privacy_tradeoff(rows: list[Row], audit: dict[str, Any], path: str | Path) -> Path:
    """Accuracy, then both attacks, all against the noise multiplier."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), dpi=120)
    accuracy_panel(axes[0], rows)
    attack_panels(list(axes[1:]), audit)
    return save(fig, path)
