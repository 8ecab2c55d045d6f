"""From command-line input to a checked config, before anything runs.

Precedence: defaults < --config FILE < shorthand options < --set pairs. The split is built and
described here too, so data problems surface before an engine starts. The click commands
(experiments/cli.py) only parse and print.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedkd.checkpoints import CHECKPOINTS, check_resumable
from fedkd.config import ExperimentConfig, log_targets, value_text
from fedkd.config_files import load_config_file
from fedkd.data.federation import federation
from fedkd.data.partition import class_histogram
from fedkd.errors import ConfigError
from fedkd.folder_lock import folder_lock
from fedkd.models import architecture_for, build_model, count_parameters
from fedkd.privacy import PrivacyLedger, noise_scale, release_rows
from fedkd.results import prepare_out_dir
from fedkd.results_files import RESULTS_FILE, ROUNDS_FILE, load_results, saved_run_config
from fedkd.run_identity import RESUME_FREE_KEYS
from fedkd.run_logs import CLIENTS_CSV, ROUNDS_CSV
from fedkd.run_plan import run_plan
from fedkd.tensorboard_log import TENSORBOARD_DIR
from fedkd.validation import validate_config

# Shorthand option -> run_config key (the same keys --set accepts).
SHORTHANDS = {
    "dataset": "dataset",
    "num_clients": "num-clients",
    "alpha": "alpha",
    "algorithm": "algorithm",
    "rounds": "rounds",
    "seed": "seed",
    "engine": "engine",
    "data_dir": "data-dir",
    "download": "download",
    "log": "log",
}


def parse_set_options(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is malformed; expected key=value, e.g. --set beta=5")
        overrides[key.strip()] = value.strip()
    return overrides


def build_config(
    config_file: str | None, shorthands: dict[str, Any], sets: tuple[str, ...], out: str | None
) -> ExperimentConfig:
    """Defaults <- config file <- shorthand options <- --set pairs; then validate."""
    cfg = ExperimentConfig()
    if config_file:
        cfg = cfg.with_overrides(load_config_file(config_file), text=False)
    cfg = cfg.with_overrides({SHORTHANDS[k]: v for k, v in shorthands.items() if v is not None})
    cfg = cfg.with_overrides(parse_set_options(sets))
    if out is not None:
        cfg = cfg.with_overrides({"out-dir": str(Path(out).resolve())})
    return validate_config(cfg)


def describe_federation(cfg: ExperimentConfig) -> list[str]:
    """Build the data split now (errors surface before any engine starts) and describe it."""
    dataset, split = federation(cfg.data, cfg.run.seed)
    hist = class_histogram(dataset.train_y, split, dataset.num_classes)
    lines = [
        f"fedkd: {cfg.fusion.algorithm} on {dataset.name} | {cfg.data.num_clients} clients | "
        f"{cfg.data.partitioner} alpha={cfg.data.alpha} | transfer set {len(split.transfer)} | "
        f"{cfg.run.rounds} rounds | engine {cfg.run.engine} | seed {cfg.run.seed}"
    ]
    lines.append(run_plan(cfg).budget.describe() + f" | eval every {cfg.run.eval_every} round(s)")
    if cfg.privacy.mechanism != "none":
        ledger = PrivacyLedger(cfg.privacy, release_rows(cfg))
        lines.append(
            f"privacy: {cfg.privacy.mechanism} noise on {cfg.privacy.noise_on}, clip {cfg.privacy.clip:g}, "
            f"scale {noise_scale(cfg.privacy, release_rows(cfg)):.4g}; "
            f"epsilon accounted by {ledger.method}"
        )
    for pid in range(cfg.data.num_clients):
        arch = architecture_for(cfg.model.models, pid, cfg.data.num_clients)
        params = count_parameters(
            build_model(arch, dataset.input_shape, dataset.num_classes, 0, cfg.model.projection_width)
        )
        classes = int((hist[pid] > 0).sum())
        lines.append(
            f"  client {pid:>3}: {arch:<11} {params:>9,d} params | train {len(split.client_train[pid]):>5}"
            f" | local test {len(split.client_test[pid]):>4} | {classes} classes"
        )
    return lines


def where_it_lands(cfg: ExperimentConfig) -> list[str]:
    """What `fedkd run` says before it starts: the results file, the logs, and Ray's start-up."""
    folder = Path(cfg.run.out_dir)
    lines = [f"results: {folder / RESULTS_FILE}"]  # rounds.jsonl beside it
    targets = log_targets(cfg.run.log)
    if "csv" in targets:
        lines.append(f"logs: {folder / ROUNDS_CSV}, {folder / CLIENTS_CSV}")
    if "tensorboard" in targets:
        lines.append(f"logs: tensorboard --logdir {folder / TENSORBOARD_DIR}")
    if cfg.run.engine == "ray":
        lines.append(
            f"starting Ray (Flower's Simulation Engine) for {cfg.data.num_clients} virtual clients ..."
        )
    return lines


@contextmanager
def owned_out_dir(out_dir: str, overwrite: bool) -> Iterator[Path]:
    """The run folder, owned by this process until the block ends (fedkd/folder_lock.py): a
    folder it can write, held by no live run, holding no results unless ``overwrite``."""
    path = prepare_out_dir(out_dir)  # a bad --out fails now, before the split is built
    with folder_lock(path):
        yield prepare_out_dir(path, overwrite)  # checked under the lock: no run can start in between


def requested_overrides(
    config_file: str | None, shorthands: dict[str, Any], sets: tuple[str, ...]
) -> dict[str, Any]:
    """What the command line asks to change, in build_config's precedence (no defaults)."""
    asked = load_config_file(config_file) if config_file else {}
    asked.update({SHORTHANDS[k]: v for k, v in shorthands.items() if v is not None})
    asked.update(parse_set_options(sets))
    return asked


def resumable_run(
    folder: str, asked: dict[str, Any] | None = None
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and results (rounds included) of an unfinished run in ``folder``, checked
    against its checkpoints (fedkd/checkpoints.py). ``asked``: changes from the command line;
    only those that leave the rounds done as they are apply (more rounds, where it executes),
    any other is refused in one line, never ignored."""
    path = Path(folder) / RESULTS_FILE
    try:
        payload = load_results(path)
        flat = saved_run_config(payload)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(f"--resume {folder!r}: no readable fedkd {RESULTS_FILE} there") from None
    if payload.get("status") in ("completed", "stopped"):  # a run that ended keeps no checkpoints
        raise ConfigError(f"--resume {folder!r}: that run is already {payload['status']}; nothing to resume")
    rounds = payload["rounds"]
    if [r.get("round") for r in rounds] != list(range(1, len(rounds) + 1)):
        raise ConfigError(
            f"--resume {folder!r}: {payload.get('rounds_file', ROUNDS_FILE)} does not hold rounds 1..n in "
            "order (a damaged line before its last); allowed: start the run again"
        )
    saved = validate_config(
        ExperimentConfig().with_overrides({**flat, "out-dir": str(Path(folder).resolve())}, text=False)
    )
    cfg = validate_config(saved.with_overrides(asked or {}))
    before, after = saved.to_run_config(), cfg.to_run_config()
    changed = sorted(k for k in {**before, **after} if after.get(k) != before.get(k))  # options: either
    refused = [k for k in changed if k not in RESUME_FREE_KEYS or k == "out-dir"]
    if refused:
        shown = ", ".join(
            f"{k}={value_text(after, k)} (the run has {value_text(before, k)})" for k in refused
        )
        free = ", ".join(k for k in RESUME_FREE_KEYS if k != "out-dir")
        raise ConfigError(
            f"--resume {folder!r}: {shown} would change the rounds already done; "
            f"allowed with --resume: {free}"
        )
    if cfg.run.rounds < len(rounds):
        done = len(rounds)
        raise ConfigError(
            f"--resume {folder!r}: rounds={cfg.run.rounds}, but {done} are done; allowed: rounds >= {done}"
        )
    check_resumable(Path(folder) / CHECKPOINTS, cfg, len(rounds), folder)
    final = payload.get("final")
    if isinstance(final, dict) and int(final.get("round") or 0) > len(rounds):  # a round whose line was lost
        payload["final"] = None
    return cfg, payload


def read_run(results_file: str) -> dict[str, Any]:
    """A run's results with its rounds (``fedkd plot``); one-line errors for a wrong file."""
    path = Path(results_file)
    if not path.is_file():
        raise ConfigError(f"{results_file!r} does not exist; allowed: a fedkd results.json")
    try:
        history = load_results(path)
        history["rounds"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise ConfigError(f"{results_file!r} is not a fedkd results.json with at least one round") from None
    return history
