"""The Python front door, offered as ``fedkd.make_config`` and ``fedkd.run``: a notebook runs an
experiment in three lines, with the keys and checks of `fedkd run`::

    import fedkd
    results = fedkd.run(algorithm="knfu", num_clients=3, rounds=2, engine="inprocess")
    results.final["alma"], len(results.rounds)

A config is an ExperimentConfig, a mapping of flat keys, or a TOML file (or an earlier run's
results.json), as `fedkd run --config` reads it; keyword arguments are flat keys over it
(``num_clients`` spells ``num-clients``). Nothing is written unless ``out`` (or ``out-dir``)
names a folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from experiments.engines import OnRound, run_experiment
from experiments.run_setup import owned_out_dir
from fedkd.config import ExperimentConfig
from fedkd.config_files import load_config_file
from fedkd.errors import ConfigError
from fedkd.results import RunResults
from fedkd.validation import validate_config

ConfigSource = ExperimentConfig | Mapping[str, Any] | str | Path | None


def make_config(source: ConfigSource = None, /, **keys: Any) -> ExperimentConfig:
    """A checked config: the defaults, then ``source``, then ``keys`` (typed values, as in TOML).
    A bad key or value is a one-line ConfigError."""
    if isinstance(source, (str, Path)):
        source = load_config_file(source)
    if isinstance(source, ExperimentConfig):
        cfg = source
    elif isinstance(source, Mapping) or source is None:
        cfg = ExperimentConfig().with_overrides(source or {}, text=False)
    else:
        raise ConfigError(
            f"config {source!r} is a {type(source).__name__}; allowed: an ExperimentConfig, "
            "a mapping of flat keys, or the path of a TOML file"
        )
    return validate_config(cfg.with_overrides(keys, text=False))


def run(
    config: ConfigSource = None,
    /,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    on_round: OnRound = None,
    **keys: Any,
) -> RunResults:
    """Run one experiment here and return its RunResults: ``rounds`` (one record a round),
    ``final`` (the last evaluated scores), ``path`` (results.json; None when nothing is written).
    ``out``: the run folder (as `fedkd run --out`; ``overwrite`` replaces results there);
    ``on_round`` is called with each round's record."""
    if out is not None:
        keys = {**keys, "out-dir": str(Path(out).resolve())}
    cfg = make_config(config, **keys)
    folder = owned_out_dir(cfg.run.out_dir, overwrite) if cfg.run.out_dir else nullcontext()
    with folder:
        return run_experiment(cfg, on_round)
