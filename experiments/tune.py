"""`fedkd tune`: every method gets the same number of Optuna trials over its own hyperparameters
(experiments/tune_space.py), scored on validation ALMA and on nothing else.

One study per algorithm and cell (the sweep's axes but seed and algorithm). A trial runs the
cell's config with the suggested settings on each tuning seed (1000, 1001, ...: disjoint from the
evaluation seeds) through the sweep's own runner (``experiments.sweep.execute``) and scores the
mean of the last evaluated rounds' ``val_alma``; trial 0 runs the base config's own values.
Nothing else a run records is read, test metrics
included. Trials of a study run one after another (TPE's next suggestion depends on the ones
before); ``--workers`` runs studies side by side. Studies live in an Optuna journal in the output
folder and each trial's sampler is seeded from the run seed, the study and the trial's position,
so a killed tune, rerun with the same command, continues where it stopped and ends with the same
choices. Runs are kept in DIR/runs.jsonl like a sweep's; a run already there is not repeated.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from experiments.stop_signals import deferred_signals, raise_if_signalled, stop_on_signals
from experiments.sweep import (
    NON_IDENTITY_KEYS,
    RUNS_FILE,
    PlannedRun,
    Sweep,
    append_row,
    cell_of,
    execute,
    expand,
    read_rows,
    run_id_of,
    share_cores,
    sweep_lock,
)
from experiments.tune_space import base_point, space_of, suggest
from experiments.tuned import TUNE_SEEDS_FROM, TunedEntry, write_tuned
from experiments.worker_pool import in_pool
from fedkd.atomic import atomic_write
from fedkd.config import ConfigError, ExperimentConfig
from fedkd.csv_cells import cell
from fedkd.results_files import load_results
from fedkd.seeding import derive_seed
from fedkd.validation import validate_config

VAL_KEY = "val_alma"  # the one thing a trial's score reads: validation ALMA of the last rounds
VAL_ROUNDS = 5  # evaluated rounds at the end whose val_alma is averaged: less noise than the last alone
JOURNAL_FILE = "optuna.journal"
TUNED_FILE = "tuned.toml"
TRIALS_FILE = "trials.csv"
RunFn = Callable[[PlannedRun, str], dict[str, Any]]  # experiments.sweep.execute's signature


class TrialFailed(Exception):
    """A trial that cannot be scored: one of its runs failed (its settings may be to blame)."""


@dataclass(frozen=True)
class Study:
    algorithm: str
    cell: dict[str, Any]  # the sweep axes held fixed (not seed, not algorithm)
    config: ExperimentConfig  # every trial's base: the sweep's base, the cell, the algorithm

    @property
    def name(self) -> str:
        return " ".join([self.algorithm, *(f"{k}={v}" for k, v in self.cell.items())])


def tune_seeds(count: int) -> list[int]:
    return list(range(TUNE_SEEDS_FROM, TUNE_SEEDS_FROM + count))


def plan_studies(
    sweep: Sweep, overrides: dict[str, Any], algorithms: list[str] | None, seeds: list[int]
) -> list[Study]:
    """One study per algorithm and cell of ``sweep`` (its seed axis collapses to the base seed);
    ``algorithms`` replaces the sweep's own. Its tuned file, if any, is not applied."""
    grid = {k: v for k, v in sweep.grid.items() if k != "seed"}
    zipped = {k: v for k, v in sweep.zipped.items() if k != "seed"}
    if algorithms is not None:
        if "algorithm" in zipped:
            raise ConfigError(
                "--algorithms: the sweep pairs algorithm with other axes in [zip]; allowed: tune that "
                "sweep without --algorithms"
            )
        grid["algorithm"] = algorithms
    studies: dict[tuple[str, str], Study] = {}
    for run in expand(Sweep(sweep.name, sweep.base, grid, zipped), overrides):
        cell = cell_of(run.axes)
        key = (run.config.fusion.algorithm, json.dumps(cell, sort_keys=True))
        studies.setdefault(key, Study(key[0], cell, run.config))
    evaluated = {*sweep.grid.get("seed", []), *sweep.zipped.get("seed", [])}
    evaluated |= {study.config.run.seed for study in studies.values()}
    if evaluated & set(seeds):
        raise ConfigError(
            f"seed={min(evaluated & set(seeds))} is both evaluated and a tuning seed; allowed: evaluation "
            f"seeds outside {seeds[0]}..{seeds[-1]}"
        )
    flat = next(iter(studies.values())).config.to_run_config()
    if flat.get("val-fraction", 1) == 0:  # the key that holds out each client's validation split
        raise ConfigError("fedkd tune scores trials on validation: val-fraction=0; allowed: > 0")
    return list(studies.values())


def run_studies(
    studies: list[Study], out: Path, trials: int, seeds: list[int], workers: int, run: RunFn | None = None
) -> Iterator[Study]:
    """Tune every study (``workers`` processes side by side); yield each as it is done. ``run``
    runs one config (default: the sweep's ``execute``). SIGINT or SIGTERM ends the run in flight
    as it ends a run, and the studies at their next trial, never mid-way through a journal write:
    the journal stays whole, and the same command resumes. Close the iterator when done with it."""
    run = run or execute
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers, len(studies)))
    with sweep_lock(out):
        if workers == 1:
            with deferred_signals():
                for study in studies:
                    run_study(study, out, trials, seeds, 1, run)
                    yield study
            return
        job = partial(run_study, out=out, trials=trials, seeds=seeds, workers=workers, run=run)
        with stop_on_signals(), closing(in_pool(job, studies, workers, note_signals=True)) as done:
            for study, _ in done:
                yield study


def _storage(out: Path) -> JournalStorage:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(out / JOURNAL_FILE)))


def _scored(handle: optuna.Study, trials: int | None = None) -> list[FrozenTrial]:
    """Trials that count towards the budget (complete or failed, not interrupted), in order."""
    done = [
        t
        for t in handle.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)
    ]
    done.sort(key=lambda t: t.user_attrs["position"])
    return done if trials is None else done[:trials]


def run_study(study: Study, out: Path, trials: int, seeds: list[int], workers: int, run: RunFn) -> None:
    """Ask, run and tell until ``trials`` trials are scored. Trial i's sampler is seeded from
    (seed, study, i) and sees the trials before it, so a resumed study asks what it would have."""
    handle = optuna.create_study(
        study_name=study.name, storage=_storage(out), direction="maximize", load_if_exists=True
    )
    setup = {"tune-seeds": seeds, "config": run_id_of(study.config)}
    if handle.user_attrs.get("setup", setup) != setup:
        raise ConfigError(
            f"{out} holds a tune of {study.name} with another config or seeds; allowed: another --out"
        )
    handle.set_user_attr("setup", setup)
    for stale in handle.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        handle.tell(stale.number, state=TrialState.FAIL)  # a killed tune's trial: asked again below
    flat = study.config.to_run_config()
    space = space_of(study.algorithm)
    while (position := len(_scored(handle))) < trials:
        raise_if_signalled()  # a safe point: the journal holds every trial told so far
        root = study.config.run.seed
        handle.sampler = optuna.samplers.TPESampler(seed=derive_seed(root, "tune", study.name, position))
        if position == 0:  # the base config itself: tuning must beat it on validation to replace it
            with warnings.catch_warnings():  # PartialFixedSampler is "experimental" since optuna 2.4
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                handle.sampler = optuna.samplers.PartialFixedSampler(base_point(space, flat), handle.sampler)
        trial = handle.ask()
        settings = suggest(space, trial, flat)
        trial.set_user_attr("position", position)
        trial.set_user_attr("settings", settings)
        try:
            score = score_trial(study, settings, out, seeds, workers, run)
        except TrialFailed as exc:
            trial.set_user_attr("error", str(exc)[:500])
            handle.tell(trial, state=TrialState.FAIL)
        else:
            handle.tell(trial, score)


def score_trial(
    study: Study, settings: dict[str, Any], out: Path, seeds: list[int], workers: int, run: RunFn
) -> float:
    """Mean validation ALMA of ``settings`` over the tuning seeds."""
    scores = []
    for seed in seeds:
        try:
            cfg = validate_config(study.config.with_overrides({**settings, "seed": seed}))
        except ConfigError as exc:
            raise TrialFailed(str(exc)) from None
        axes = {"algorithm": study.algorithm, **study.cell, **settings, "seed": seed}
        planned = share_cores(PlannedRun(run_id_of(cfg), axes, cfg), workers)
        done = {row["id"]: row for row in read_rows(out / RUNS_FILE) if row.get("status") == "ok"}
        row = done.get(planned.run_id)
        if row is None:
            raise_if_signalled()
            row = run(planned, str(out))
            append_row(out / RUNS_FILE, row)
        scores.append(validation_alma(row, out))
    return sum(scores) / len(scores)


def validation_alma(row: dict[str, Any], out: Path) -> float:
    """Mean ``val_alma`` over the last ``VAL_ROUNDS`` evaluated rounds of a finished run's row (and
    nothing else). A run that finished without one has no validation split: every trial would be
    the same, so stop."""
    if row.get("status") != "ok":
        raise TrialFailed(f"run {row.get('id')} failed: {row.get('error')}")
    rounds = [r for r in load_results(out / row["results"])["rounds"] if r.get("evaluated", True)]
    values = [r.get(VAL_KEY) for r in rounds[-VAL_ROUNDS:]]
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ConfigError(
            f"run {out / row['results']} records no finite {VAL_KEY} in its last rounds, so it has no "
            "validation split to tune on; allowed: val-fraction > 0"
        )
    return sum(values) / len(values)


def write_outputs(studies: list[Study], out: Path, trials: int, seeds: list[int]) -> list[str]:
    """DIR/trials.csv (every trial) and DIR/tuned.toml (each study's best of its first ``trials``
    scored trials); returns the studies with no scored trial (then tuned.toml is not written)."""
    storage = _storage(out)
    entries, rows, empty = [], [], []
    for study in studies:
        handle = optuna.load_study(study_name=study.name, storage=storage)
        rows += [_trial_row(study, t) for t in sorted(handle.get_trials(deepcopy=False), key=_order)]
        complete = [t for t in _scored(handle, trials) if t.state == TrialState.COMPLETE]
        if not complete:
            empty.append(study.name)
            continue
        best = max(complete, key=lambda t: (t.value, -t.user_attrs["position"]))  # first of equals
        chosen, position = best.user_attrs["settings"], best.user_attrs["position"]
        entries.append(TunedEntry(study.algorithm, study.cell, chosen, best.value, position))
    _write_csv(out / TRIALS_FILE, rows)
    if not empty:
        write_tuned(out / TUNED_FILE, entries, _about(studies[0], trials, seeds))
    return empty


def _order(trial: FrozenTrial) -> tuple[int, int]:
    return trial.user_attrs.get("position", -1), trial.number


def _trial_row(study: Study, trial: FrozenTrial) -> dict[str, Any]:
    state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(trial.state, "running")
    if trial.state == TrialState.FAIL and "error" not in trial.user_attrs:
        state = "interrupted"
    row = {
        "algorithm": study.algorithm,
        "cell": " ".join(f"{k}={v}" for k, v in study.cell.items()),
        "trial": trial.user_attrs.get("position", ""),
        "state": state,
        VAL_KEY: trial.value if trial.state == TrialState.COMPLETE else "",
        "error": trial.user_attrs.get("error", ""),
    }
    return row | trial.user_attrs.get("settings", {})


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fixed = ["algorithm", "cell", "trial", "state", VAL_KEY]
    settings = sorted({key for row in rows for key in row} - {*fixed, "error"})

    def write(handle: Any) -> None:  # every value through the one CSV formatter (fedkd/csv_cells.py)
        writer = csv.DictWriter(handle, [*fixed, *settings, "error"], restval="")
        writer.writeheader()
        writer.writerows({key: cell(value) for key, value in row.items()} for row in rows)

    atomic_write(path, write)


def _about(study: Study, trials: int, seeds: list[int]) -> dict[str, Any]:
    """tuned.toml's [tune] table: how the settings were chosen, and the base they hold for."""
    defaults = ExperimentConfig().to_run_config()
    skip = {*NON_IDENTITY_KEYS, "seed", "algorithm", *study.cell}
    base = {k: v for k, v in study.config.to_run_config().items() if k not in skip and v != defaults.get(k)}
    return {
        "trials": trials,
        "tune-seeds": seeds,
        "objective": f"{VAL_KEY} of the last {VAL_ROUNDS} evaluated rounds, mean over them and the tuning "
        "seeds (maximised); trial 0 is the base config",
        "sampler": f"optuna {optuna.__version__} TPE, seeded per trial from seed {study.config.run.seed}",
        "base": base,
    }
