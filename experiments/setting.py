"""The fixed setting of a sweep in one line: what a table's caption says so that the table can be
read alone, pasted into a paper without the sweep beside it.

Fixed = one value in every run of the sweep. A fixed key is named when it differs from its
default (a default is the documented setting: `fedkd keys`); the compute budget (rounds and
epochs per round) and the seeds are always named, since no reader can judge a number without them.
Keys that say how or where a run executed, not what it computed, are never named.
"""

from __future__ import annotations

from typing import Any

from experiments.run_records import axis_text
from fedkd.config import ExperimentConfig

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
BUDGET = ("rounds", "local-epochs", "distill-epochs", "revisit-epochs", "budget-match")


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


def seeds_text(seeds: list[int]) -> str:
    """``0-9 (10)`` for a run of consecutive seeds, else the list: ``1, 4, 7 (3)``."""
    unique = sorted(set(seeds))
    if not unique:
        return "none"
    consecutive = unique == list(range(unique[0], unique[-1] + 1))
    listed = f"{unique[0]}-{unique[-1]}" if consecutive and len(unique) > 2 else ", ".join(map(str, unique))
    return f"{listed} ({len(unique)})"


def setting_line(configs: list[dict[str, Any]], seeds: list[int]) -> str:
    """``Setting: dataset=mnist, alpha=0.3; budget: rounds=20, ...; seeds 0-2 (3).`` Keys in
    config order; a budget key that varies is an axis of the table, so it is not named here."""
    defaults = {k: axis_text(v) for k, v in ExperimentConfig().to_run_config().items()}
    fixed = fixed_keys(configs)
    changed = [f"{k}={v}" for k, v in fixed.items() if k not in BUDGET and defaults.get(k) != v]
    budget = [f"{k}={fixed[k]}" for k in BUDGET if k in fixed]
    parts = [
        "Setting: " + (", ".join(changed) if changed else "defaults"),
        *(["budget: " + ", ".join(budget)] if budget else []),
        "seeds " + seeds_text(seeds),
    ]
    return "; ".join(parts) + "."
