"""From command-line input to a checked config, before anything runs.

Precedence: defaults < --config FILE < shorthand options < --set pairs. The split is built and
described here too, so data problems surface before an engine starts. The click commands
(experiments/cli.py) only parse and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedkd.budget import compute_budget
from fedkd.config import ExperimentConfig, log_targets
from fedkd.config_files import load_config_file
from fedkd.data.federation import federation
from fedkd.data.partition import class_histogram
from fedkd.errors import ConfigError
from fedkd.models import architecture_for, build_model, count_parameters
from fedkd.privacy import PrivacyLedger, noise_scale, release_rows
from fedkd.results_files import RESULTS_FILE, load_results, saved_run_config
from fedkd.run_logs import CLIENTS_CSV, ROUNDS_CSV
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
    lines.append(compute_budget(cfg).describe() + f" | eval every {cfg.run.eval_every} round(s)")
    if cfg.privacy.mechanism != "none":
        ledger = PrivacyLedger(cfg.privacy, release_rows(cfg))
        lines.append(
            f"privacy: {cfg.privacy.mechanism} noise on {cfg.privacy.noise_on}, clip {cfg.privacy.clip:g}, "
            f"scale {noise_scale(cfg.privacy, release_rows(cfg)):.4g}; "
            f"epsilon accounted by {ledger.method}"
        )
    for pid in range(cfg.data.num_clients):
        arch = architecture_for(cfg.model.models, pid, cfg.data.num_clients)
        params = count_parameters(build_model(arch, dataset.input_shape, dataset.num_classes, 0))
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


def resumable_run(folder: str) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and results (rounds included) of an unfinished run in ``folder``."""
    path = Path(folder) / RESULTS_FILE
    try:
        payload = load_results(path)
        flat = saved_run_config(payload)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(f"--resume {folder!r}: no readable fedkd {RESULTS_FILE} there") from None
    if payload.get("status") == "completed":
        raise ConfigError(f"--resume {folder!r}: that run is already completed; nothing to resume")
    cfg = ExperimentConfig().with_overrides({**flat, "out-dir": str(Path(folder).resolve())}, text=False)
    return validate_config(cfg), payload


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
