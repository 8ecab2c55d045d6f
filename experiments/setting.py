"""The setting of a sweep in one line: what a table's caption says so that the table can be read
alone, pasted into a paper without the sweep beside it.

Fixed = one value in every run of the sweep; a key that varies is an axis of the table, so it is
not named. Named, in this order: the setting a reader needs first (dataset, number of clients,
models, rounds, partitioner, and alpha for a Dirichlet split), whatever their values; every other
fixed key that differs from its default (a default is the documented setting: `fedkd keys`); the
per-round budget (epochs, how budgets are matched); the tuned hyperparameters; the seeds. Keys
that say how or where a run executed, not what it computed, are never named.

A key that varies though no run has it as an axis can only come from a tuned file (a sweep run's
settings are defaults < [base] < tuned < --set < its axes: experiments/sweep.py): the line says
they were tuned on validation per method (and cell) and names the keys, not every chosen value.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from experiments.run_records import axis_text
from fedkd.config import ExperimentConfig
from fedkd.run_identity import NEUTRAL_VALUES

# how and where a run executed: they change no number of a table
EXECUTION = (
    "seed",
    "out-dir",
    "data-dir",
    "download",
    "log",
    "device",
    "engine",
    "workers",
    "worker-pool",
    "client-threads",
    "client-gpus",
    "ray-address",
    "offload-idle",
    "min-nodes-wait",
    "reply-timeout",
    "mixed-precision",
)
HEADLINE = ("dataset", "num-clients", "models", "rounds", "partitioner")  # named whatever their value
BUDGET = ("local-epochs", "distill-epochs", "revisit-epochs", "budget-match")


def fixed_keys(configs: list[dict[str, Any]]) -> dict[str, str]:
    """Keys (flat run-config spelling) with one value in every config, that value as text; the
    execution keys left out."""
    if not configs:
        return {}
    first = configs[0]
    return {
        key: axis_text(value)
        for key, value in first.items()
        if key not in EXECUTION and all(key in c and axis_text(c[key]) == axis_text(value) for c in configs)
    }


def tuned_keys(configs: list[dict[str, Any]], axes: Collection[str]) -> list[str]:
    """Keys that vary across the configs though none is an axis: the tuned ones."""
    keys = {key for config in configs for key in config} - set(EXECUTION) - set(axes)
    return sorted(k for k in keys if len({axis_text(c.get(k)) for c in configs}) > 1)


def seeds_text(seeds: list[int]) -> str:
    """``0-9 (10)`` for a run of consecutive seeds, else the list: ``1, 4, 7 (3)``."""
    unique = sorted(set(seeds))
    if not unique:
        return "none"
    consecutive = unique == list(range(unique[0], unique[-1] + 1))
    listed = f"{unique[0]}-{unique[-1]}" if consecutive and len(unique) > 2 else ", ".join(map(str, unique))
    return f"{listed} ({len(unique)})"


def setting_line(configs: list[dict[str, Any]], seeds: list[int], axes: Collection[str]) -> str:
    """``Setting: dataset=mnist, num-clients=10, ..., rounds=20, partitioner=dirichlet, alpha=0.3,
    val-fraction=0.2; budget: local-epochs=2, ...; seeds 0-2 (3).`` ``axes``: the sweep's axes
    (a key varying outside them was tuned)."""
    defaults = {k: axis_text(v) for k, v in ExperimentConfig().to_run_config().items()}
    configs = [
        {**NEUTRAL_VALUES, **c} for c in configs
    ]  # a run made before a key existed ran at its neutral value
    fixed = fixed_keys(configs)
    first = [*HEADLINE, *(["alpha"] if fixed.get("partitioner") == "dirichlet" else [])]
    others = [k for k, v in fixed.items() if k not in (*first, *BUDGET) and defaults.get(k) != v]
    named = [f"{k}={fixed[k]}" for k in [*first, *others] if k in fixed]
    budget = [f"{k}={fixed[k]}" for k in BUDGET if k in fixed]
    tuned = tuned_keys(configs, axes)
    per = "method and cell" if set(axes) - {"seed", "algorithm"} else "method"
    how = f"hyperparameters tuned on validation per {per} (tuned.toml): {', '.join(tuned)}"
    parts = [
        "Setting: " + (", ".join(named) or "as the table's axes say"),
        *(["budget: " + ", ".join(budget)] if budget else []),
        *([how] if tuned else []),
        "seeds " + seeds_text(seeds),
    ]
    return "; ".join(parts) + "."
