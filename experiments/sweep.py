"""Parameter sweeps: grid expansion, parallel runs, a crash-safe results table, resume.

A sweep file (TOML) has ``[base]`` (flat config keys for every run), ``[grid]`` (key = list of
values: the cartesian product) and optionally ``[zip]`` (key = list, all lists the same
length: varied together) and optionally ``tuned = "FILE"`` (a tuned.toml from `fedkd tune`,
relative to the sweep file: each run gets its algorithm's chosen settings for its cell; order
defaults < [base] < tuned < --set < the run's axes, and a tuned key may not be an axis). Each
finished run appends one JSON line to ``DIR/runs.jsonl``; a run whose config hash is already
there is skipped, so running the same command again resumes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.stop_signals import stop_on_signals
from experiments.tuned import Tuned, load_tuned
from experiments.worker_pool import in_pool
from fedkd.config import ConfigError, ExperimentConfig
from fedkd.config_files import read_toml
from fedkd.folder_lock import SWEEP_LOCK, folder_lock
from fedkd.results import json_safe
from fedkd.results_files import RESULTS_FILE, mark_interrupted, read_json_lines
from fedkd.run_identity import NON_IDENTITY_KEYS, identity_keys
from fedkd.validation import validate_config

RUNS_FILE = "runs.jsonl"


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    axes: dict[str, Any]  # the values this run takes on the sweep's axes
    config: ExperimentConfig


@dataclass(frozen=True)
class Sweep:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    zipped: dict[str, list[Any]]
    tuned: str = ""  # path of a tuned.toml whose settings every run gets ("": none)

    @property
    def axes(self) -> list[str]:
        return [*self.grid, *self.zipped]


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    raw = read_toml(path, "sweep file")
    unknown = set(raw) - {"base", "grid", "zip", "name", "tuned"}
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown table {sorted(unknown)[0]!r}; allowed: base, grid, zip, name, tuned"
        )
    tuned = raw.get("tuned", "")
    if not isinstance(tuned, str):
        raise ConfigError(f"sweep file {path}: tuned must be the path of a tuned.toml (fedkd tune)")
    for table in ("base", "grid", "zip"):
        if table in raw and not isinstance(raw[table], dict):
            raise ConfigError(f"sweep file {path}: {table} must be a [{table}] table of keys")
    grid, zipped = raw.get("grid", {}), raw.get("zip", {})
    for table, values in (("grid", grid), ("zip", zipped)):
        for key, value in values.items():
            if not isinstance(value, list) or not value:
                raise ConfigError(f"sweep file {path}: [{table}] {key} must be a non-empty list")
    if len({len(v) for v in zipped.values()}) > 1:
        raise ConfigError(f"sweep file {path}: [zip] lists must all have the same length")
    both = set(grid) & set(zipped)
    if both:
        raise ConfigError(f"sweep file {path}: key {sorted(both)[0]!r} is in both [grid] and [zip]")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or "/" in name or not name.isprintable():
        raise ConfigError(
            f"sweep file {path}: name={name!r} is invalid; allowed: a string, the sweep folder's name "
            "(no '/', no control characters)"
        )
    tuned = str(path.parent / tuned) if tuned else ""  # relative to the sweep file
    return Sweep(name, raw.get("base", {}), grid, zipped, tuned)


def run_id_of(cfg: ExperimentConfig) -> str:
    """Stable identity of a run: hash of its full config, minus where/how it executes."""
    identity = identity_keys(cfg.to_run_config())
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cell_of(axes: dict[str, Any]) -> dict[str, Any]:
    """The axes that make a run's cell: all but seed, algorithm and how it executes."""
    return {k: v for k, v in axes.items() if k not in ("seed", "algorithm", *NON_IDENTITY_KEYS)}


def expand(sweep: Sweep, overrides: dict[str, Any] | None = None) -> list[PlannedRun]:
    """Every configuration of the sweep, validated, in a deterministic order."""
    base = ExperimentConfig().with_overrides(sweep.base, text=False)
    overrides = overrides or {}
    tuned = _checked_tuned(sweep) if sweep.tuned else None
    grid_rows = [
        dict(zip(sweep.grid, combo, strict=True)) for combo in itertools.product(*sweep.grid.values())
    ]
    n_zip = len(next(iter(sweep.zipped.values()))) if sweep.zipped else 1
    zip_rows = [{k: v[i] for k, v in sweep.zipped.items()} for i in range(n_zip)]
    planned, seen = [], set()
    for grid_row, zip_row in itertools.product(grid_rows, zip_rows):
        axes = {**grid_row, **zip_row}
        cfg = base.with_overrides(overrides).with_overrides(axes, text=False)  # --set is text
        if tuned is not None:
            tuned.check_run(cfg, axes, NON_IDENTITY_KEYS)
            chosen = tuned.settings_for(cfg.fusion.algorithm, cell_of(axes))
            cfg = (
                base.with_overrides(chosen, text=False)
                .with_overrides(overrides)
                .with_overrides(axes, text=False)
            )
        cfg = validate_config(cfg)
        run_id = run_id_of(cfg)
        if run_id not in seen:
            seen.add(run_id)
            planned.append(PlannedRun(run_id, axes, cfg))
    return planned


def _checked_tuned(sweep: Sweep) -> Tuned:
    tuned = load_tuned(sweep.tuned)
    clash = sorted(tuned.keys() & set(sweep.axes))
    if clash:
        raise ConfigError(
            f"tuned file {sweep.tuned!r} sets {clash[0]!r}, which the sweep varies; allowed: a key "
            "that is tuned or an axis, not both"
        )
    return tuned


# -- the results table -------------------------------------------------------------------------
def read_rows(path: Path, damaged: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows of runs.jsonl. A line that is not a row (a torn last line after a kill, or damage)
    is skipped; its 1-based number is added to ``damaged`` when a list is given."""
    rows, bad = read_json_lines(path, "id")
    if damaged is not None:
        damaged.extend(bad)
    return rows


def repair_table(path: Path) -> None:
    """Cut a torn trailing line so that the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One complete line per write, then fsync: a crash loses at most this row, never corrupts others."""
    line = (json.dumps(row, allow_nan=False, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- running -----------------------------------------------------------------------------------
def execute(run: PlannedRun, out_dir: str) -> dict[str, Any]:
    """Run one configuration (in a worker process); never raises, returns the table row."""
    import logging

    from experiments.engines import run_experiment

    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("flwr.fedkd").setLevel(logging.WARNING)  # no round lines from workers
    run_dir = Path(out_dir) / "runs" / run.run_id
    cfg = run.config.with_overrides({"out-dir": str(run_dir)})
    row: dict[str, Any] = {"id": run.run_id, "axes": run.axes, "config": cfg.to_run_config()}
    try:
        from fedkd.data.federation import federation

        federation(cfg.data, cfg.run.seed)  # data problems fail here, with the loader's message
        # in a worker, a signal interrupts the run (results marked, files removed) and no other
        with stop_on_signals(functools.partial(mark_interrupted, run_dir / RESULTS_FILE)):
            results = run_experiment(cfg)
        final = results.payload["final"]
        # relative to the sweep folder: the folder can move, and reports run from anywhere
        row.update(status="ok", final=final, results=os.path.relpath(results.path, out_dir))
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the sweep goes on
        message = " ".join(str(exc).split()) or type(exc).__name__
        row.update(status="failed", error=f"{type(exc).__name__}: {message}"[:500])
        row["traceback_tail"] = traceback.format_exc().splitlines()[-3:]
    return json_safe(row)


def pending_runs(planned: list[PlannedRun], table: Path, retry_failed: bool) -> list[PlannedRun]:
    done = {row["id"] for row in read_rows(table) if row.get("status") == "ok" or not retry_failed}
    return [run for run in planned if run.run_id not in done]


def run_sweep(
    planned: list[PlannedRun], out_dir: str | Path, workers: int, retry_failed: bool = False
) -> Iterator[dict[str, Any]]:
    """Run what is not yet in the table, ``workers`` processes at a time; yield each row
    (experiments/sweep_ray.py runs them as Ray tasks instead)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(out):
        yield from _run_unlocked(planned, out, workers, retry_failed)


def sweep_lock(out: Path) -> AbstractContextManager[None]:
    """One sweep per folder: a second one would duplicate rows (fedkd/folder_lock.py)."""
    return folder_lock(out, SWEEP_LOCK, "fedkd sweep")


def share_cores(run: PlannedRun, sweep_workers: int) -> PlannedRun:
    """A run left to pick its in-process ``workers`` (0) gets its share of the cores, so that
    sweep processes side by side do not oversubscribe the machine."""
    if run.config.run.workers:
        return run
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(
        1, min(run.config.data.num_clients, cores // max(1, sweep_workers) // run.config.train.client_threads)
    )
    return PlannedRun(run.run_id, run.axes, run.config.with_overrides({"workers": share}))


def _run_unlocked(
    planned: list[PlannedRun], out: Path, workers: int, retry_failed: bool
) -> Iterator[dict[str, Any]]:
    table = out / RUNS_FILE
    repair_table(table)
    todo = [share_cores(run, workers) for run in pending_runs(planned, table, retry_failed)]
    if workers <= 1:
        for run in todo:
            row = execute(run, str(out))
            append_row(table, row)
            yield row
        return
    with closing(in_pool(functools.partial(execute, out_dir=str(out)), todo, workers)) as done:
        for _, row in done:
            append_row(table, row)
            yield row
