"""tuned.toml: the settings `fedkd tune` chose, per algorithm and cell, read back by sweeps.

```toml
[tune]                       # how they were chosen (only tune-seeds is read back)
trials = 20
tune-seeds = [1000]
objective = "val_alma of the last 5 evaluated rounds, mean over them and the tuning seeds"

[[tuned]]
algorithm = "knfu"
val-alma = 0.71
trial = 12
[tuned.cell]                 # the sweep axes the study held fixed (empty: every cell)
alpha = 0.5
[tuned.settings]             # config keys, applied to every run of knfu in that cell
learning-rate = 0.0021
```

A sweep run takes the entry of its algorithm whose cell matches the run's axes most closely (every
key of the entry's cell equal to the run's value; an empty cell matches every run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedkd.config import ConfigError, ExperimentConfig, is_config_key, value_text
from fedkd.config_files import read_toml
from fedkd.results_files import atomic_write_text

TUNE_SEEDS_FROM = 1000  # tuning runs use seeds 1000, 1001, ...: never an evaluation sweep's seeds


@dataclass(frozen=True)
class TunedEntry:
    algorithm: str
    cell: dict[str, Any]  # sweep axes (not seed, not algorithm) -> value the study held fixed
    settings: dict[str, Any]  # config keys -> the chosen values
    val_alma: float  # the chosen trial's score: validation ALMA, mean over the tuning seeds
    trial: int  # its position in the study (0-based)


@dataclass(frozen=True)
class Tuned:
    path: Path
    entries: list[TunedEntry]
    tune_seeds: list[int]
    base: dict[str, Any] | None = None  # the tuning base: keys off their defaults (None: not recorded)

    def check_run(self, cfg: ExperimentConfig, axes: Mapping[str, Any], executes: tuple[str, ...]) -> None:
        """Refuse a run these settings do not hold for: one on a tuning seed, or one whose config
        differs from the tuning base in any key but its seed, its cell's axes, how it executes
        (``executes``) and the tuned keys themselves."""
        if cfg.run.seed in self.tune_seeds:
            raise ConfigError(
                f"seed={cfg.run.seed} was a tuning seed of {str(self.path)!r}; allowed: seeds it was not "
                f"tuned on (not {', '.join(map(str, self.tune_seeds))})"
            )
        if self.base is None:  # written by hand, or before the base was recorded: nothing to check
            return
        tuning = ExperimentConfig().with_overrides(self.base).to_run_config()
        skip = {*executes, "seed", "algorithm", *axes, *self.keys()}
        ran = cfg.to_run_config()
        for key in {**tuning, **ran}:  # a plugin's key may be in either alone
            value = ran.get(key)
            if key not in skip and value != tuning.get(key):
                raise ConfigError(
                    f"{key}={value_text(ran, key)}, but {str(self.path)!r} was tuned with "
                    f"{key}={value_text(tuning, key)}; "
                    "allowed: the base the settings were tuned on (or tune again)"
                )

    def keys(self) -> set[str]:
        return {key for entry in self.entries for key in entry.settings}

    def settings_for(self, algorithm: str, cell: Mapping[str, Any]) -> dict[str, Any]:
        """The chosen settings of ``algorithm`` for a run whose cell axes are ``cell``."""
        cell = _normal(cell)
        fits = [
            e
            for e in self.entries
            if e.algorithm == algorithm and all(cell.get(k, None) == v for k, v in _normal(e.cell).items())
        ]
        if not fits:
            where = ", ".join(f"{k}={v}" for k, v in cell.items()) or "the base config"
            raise ConfigError(
                f"tuned file {str(self.path)!r} has no settings for algorithm={algorithm} at {where}; "
                f"allowed: tune it (fedkd tune) or leave it out of the sweep"
            )
        best = max(len(e.cell) for e in fits)
        closest = [e for e in fits if len(e.cell) == best]
        if len(closest) > 1:
            raise ConfigError(
                f"tuned file {str(self.path)!r}: {len(closest)} entries for algorithm={algorithm} fit "
                f"{dict(cell)} equally well; allowed: one"
            )
        return dict(closest[0].settings)


def _normal(cell: Mapping[str, Any]) -> dict[str, Any]:
    """Cell values as the config holds them (alpha 3 and 3.0 are the same cell)."""
    defaults = ExperimentConfig()
    return {k: defaults.with_overrides({k: v}).to_run_config()[k] for k, v in cell.items()}


def write_tuned(path: Path, entries: list[TunedEntry], about: dict[str, Any]) -> Path:
    """Write tuned.toml atomically; ``about``: the [tune] table (how the settings were chosen)."""
    parts = [
        "# Written by fedkd tune: settings chosen on validation ALMA, never on test (docs/tuning.md).\n",
        tomli_w.dumps({"tune": about}),
    ]
    for e in entries:
        head = {"algorithm": e.algorithm, "val-alma": e.val_alma, "trial": e.trial}
        parts += [
            "[[tuned]]\n" + tomli_w.dumps(head),
            "[tuned.cell]\n" + tomli_w.dumps(e.cell),
            "[tuned.settings]\n" + tomli_w.dumps(e.settings),
        ]
    atomic_write_text(path, "\n".join(parts))
    return path


def load_tuned(path: str | Path) -> Tuned:
    """Read and check a tuned.toml: known config keys, valid values, one-line errors naming it."""
    path = Path(path)
    raw = read_toml(path, "tuned file")
    where = f"tuned file {str(path)!r}"
    unknown = sorted(set(raw) - {"tune", "tuned"})
    if unknown:
        raise ConfigError(f"{where}: unknown table {unknown[0]!r}; allowed: tune, tuned")
    entries = raw.get("tuned", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: tuned must be [[tuned]] tables")
    seeds = raw.get("tune", {}).get("tune-seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: [tune] tune-seeds must be a list of integers")
    base = raw.get("tune", {}).get("base")
    if base is not None and (not isinstance(base, dict) or not all(map(is_config_key, base))):
        raise ConfigError(f"{where}: [tune] base must be a table of config keys")
    return Tuned(path, [_entry(e, where) for e in entries], seeds, base)


def _entry(raw: dict[str, Any], where: str) -> TunedEntry:
    algorithm, cell, settings = raw.get("algorithm"), raw.get("cell", {}), raw.get("settings", {})
    if not isinstance(algorithm, str) or not isinstance(cell, dict) or not isinstance(settings, dict):
        raise ConfigError(f"{where}: each [[tuned]] needs algorithm = NAME, [tuned.cell], [tuned.settings]")
    for key in [*cell, *settings]:
        if not is_config_key(key):
            raise ConfigError(f"{where}: unknown config key {key!r} (algorithm={algorithm}); see fedkd keys")
    try:
        ExperimentConfig().with_overrides({**cell, **settings})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    score = raw.get("val-alma", math.nan)
    return TunedEntry(algorithm, cell, settings, float(score), int(raw.get("trial", -1)))
