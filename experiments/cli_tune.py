"""`fedkd tune`: the same number of Optuna trials for every method, on validation ALMA
(experiments/tune.py); its tuned.toml feeds `fedkd sweep` (``tuned = "..."`` or ``--tuned``)."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import click

from experiments.cli_options import config_options
from experiments.stop_signals import deferred_signals, raise_if_signalled
from experiments.tune_space import DEFAULT_TRIALS
from fedkd.errors import ConfigError


@click.command("tune")
@click.argument("sweep_file", required=False)
@config_options("config", "set", "dataset", "data-dir", "num-clients", "alpha", "seed", "rounds", "engine")
@click.option(
    "--algorithms",
    type=str,
    help="Comma list of algorithms to tune [default: the sweep's algorithm axis, else the config's].",
)
@click.option(
    "--trials",
    type=int,
    default=DEFAULT_TRIALS,
    show_default=True,
    help="Optuna trials per algorithm and cell (the same for every method).",
)
@click.option(
    "--tune-seeds",
    "seed_count",
    type=int,
    default=1,
    show_default=True,
    help="Seeds each trial runs on (1000, 1001, ...: never an evaluation seed); it scores their mean.",
)
@click.option("--out", type=str, help="Folder for the studies, runs, tuned.toml [default: runs/tune-<name>].")
@click.option("--workers", type=int, default=1, show_default=True, help="Studies tuned side by side.")
def tune(
    sweep_file: str | None,
    config_file: str | None,
    sets: tuple[str, ...],
    algorithms: str | None,
    trials: int,
    seed_count: int,
    out: str | None,
    workers: int,
    **shorthands: Any,
) -> None:
    """Tune every algorithm's own hyperparameters on validation ALMA (never test), the same number
    of trials each, per cell of SWEEP_FILE (its axes but seed and algorithm) or for --config;
    running it again resumes. Writes tuned.toml (the chosen settings) and trials.csv."""
    from experiments.cli_sweep import resolve_sweep_file
    from experiments.run_setup import SHORTHANDS, build_config, parse_set_options
    from experiments.sweep import Sweep, load_sweep
    from experiments.tune import TRIALS_FILE, TUNED_FILE, plan_studies, run_studies, tune_seeds, write_outputs

    for name, value in (("--trials", trials), ("--tune-seeds", seed_count), ("--workers", workers)):
        if value < 1:
            raise ConfigError(f"{name}={value} is invalid; allowed: >= 1")
    names = None
    if algorithms is not None:
        names = [name.strip() for name in algorithms.split(",") if name.strip()]
        if not names:
            raise ConfigError(f"--algorithms={algorithms!r} names no algorithm; allowed: a comma list")
    if sweep_file:
        if config_file:
            raise ConfigError("fedkd tune takes a sweep file or --config, not both")
        spec = load_sweep(resolve_sweep_file(sweep_file))
        overrides = {SHORTHANDS[k]: v for k, v in shorthands.items() if v is not None}
        overrides |= parse_set_options(sets)
    else:
        cfg = build_config(config_file, shorthands, sets, None)
        spec, overrides = Sweep(cfg.data.dataset, cfg.to_run_config(), {}, {}), {}
    seeds = tune_seeds(seed_count)
    studies = plan_studies(spec, overrides, names, seeds)
    folder = Path(out or Path("runs") / f"tune-{spec.name}")
    click.echo(
        f"tune {spec.name}: {len(studies)} studies (algorithm x cell), {trials} trials each, scored on "
        f"validation ALMA over seed(s) {', '.join(map(str, seeds))}, {workers} worker(s) -> {folder}"
    )
    with deferred_signals():  # SIGINT/SIGTERM: the tune stops at its next safe point, resumable
        with closing(run_studies(studies, folder, trials, seeds, workers)) as done:
            for study in done:
                click.echo(f"  {study.name}: {trials} trials done")
        raise_if_signalled()
        empty = write_outputs(studies, folder, trials, seeds)
    click.echo(f"every trial: {folder / TRIALS_FILE}")
    if empty:
        click.echo(f"fedkd: error: no trial of {', '.join(empty)} could be scored (trials.csv)", err=True)
        sys.exit(1)
    tuned = folder / TUNED_FILE
    click.echo(f"chosen settings: {tuned} (a sweep uses them: fedkd sweep FILE --tuned {tuned})")
