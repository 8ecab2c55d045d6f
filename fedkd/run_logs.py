"""Logs where researchers look, beside results.json and rounds.jsonl (config key ``log``).

``csv``: ``rounds.csv`` (one row per round) and ``clients.csv`` (one row per client per round),
appended as each round ends, values exactly as in rounds.jsonl (floats written in full). An
empty cell is a value the round does not have (a round not evaluated has no accuracy).
``tensorboard``: event files in ``tensorboard/`` (fedkd/tensorboard_log.py). A resumed run
rewrites the CSVs with the rounds it keeps, as it does rounds.jsonl.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Protocol

from fedkd.config import ExperimentConfig, log_targets
from fedkd.csv_cells import cell
from fedkd.metric_specs import distinct, recorded_names
from fedkd.models import architecture_for
from fedkd.results_files import atomic_write_text
from fedkd.tensorboard_log import TensorBoardLog

ROUNDS_CSV = "rounds.csv"
CLIENTS_CSV = "clients.csv"
ROUND_COLUMNS = (
    "round",
    "evaluated",
    "alma",
    "alma_se",
    "alma_std",
    "alma_min",
    "alma_clients",
    "alma_matched",
    "alma_matched_se",
    "val_alma",
    "global_acc",
    "self_weight",
    "bytes_up",
    "bytes_down",
    "wall_s",
    "compute_s",
    "server_steps",
    "participants",  # how many clients were asked to train
    "failed_clients",  # how many replies were dropped
    "rolled_back",  # how many clients undid their distillation (knfu-guard)
    "epsilon_max",  # the largest cumulative epsilon of any client (privacy noise on)
)
CLIENT_COLUMNS = (
    "round",
    "partition_id",
    "architecture",
    "participated",
    "local_acc",
    "global_acc",
    "local_test_size",
    "matched_acc",
    "val_acc",
    "private_samples",
    "transfer_samples",
    "private_steps",
    "transfer_steps",
    "rolled_back",
    "epsilon",
)


class RoundLog(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def round_columns() -> tuple[str, ...]:
    """rounds.csv's columns: fedkd's, then each recorded metric's round mean (fedkd/metric_specs.py)."""
    return distinct((*ROUND_COLUMNS, *recorded_names()), "rounds.csv")


def client_columns() -> tuple[str, ...]:
    """clients.csv's columns: fedkd's, then each recorded metric's per-client value."""
    return distinct((*CLIENT_COLUMNS, *recorded_names()), "clients.csv")


def round_row(record: dict[str, Any]) -> list[str]:
    counted = {key: len(record[key]) for key in ("participants", "failed_clients", "rolled_back")}
    epsilon = max(record["epsilon"].values()) if record.get("epsilon") else None
    values = {**record, **counted, "epsilon_max": epsilon}
    return [cell(values.get(column)) for column in round_columns()]


def client_rows(record: dict[str, Any], architectures: list[str]) -> list[list[str]]:
    """One row per client of the federation (those that sat the round out say so)."""
    asked, rolled = set(record["participants"]), set(record["rolled_back"])
    epsilon = record.get("epsilon") or {}
    rows = []
    for pid, arch in enumerate(architectures):
        values = {
            "round": record["round"],
            "partition_id": pid,
            "architecture": arch,
            "participated": pid in asked,
            "local_acc": record["client_acc"].get(pid),
            "global_acc": record.get("client_global_acc", {}).get(pid),
            "local_test_size": record["client_test_size"].get(pid),
            "private_samples": record["private_samples"].get(pid),
            "transfer_samples": record["transfer_samples"].get(pid),
            "matched_acc": record.get("client_matched_acc", {}).get(pid),
            "val_acc": record.get("client_val_acc", {}).get(pid),
            "private_steps": record.get("private_steps", {}).get(pid),
            "transfer_steps": record.get("transfer_steps", {}).get(pid),
            "rolled_back": pid in rolled if pid in asked else None,
            "epsilon": epsilon.get(pid),
            **{name: (record.get(f"client_{name}") or {}).get(pid) for name in recorded_names()},
        }
        rows.append([cell(values[column]) for column in client_columns()])
    return rows


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def append_text(path: Path, text: str) -> None:
    """Append whole rows in one write, then fsync (a kill loses at most this round's rows)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class CsvLog:
    """rounds.csv and clients.csv in ``folder``; ``kept``: the rounds a resumed run starts with."""

    def __init__(self, cfg: ExperimentConfig, folder: Path, kept: list[dict[str, Any]]) -> None:
        k = cfg.data.num_clients
        self.architectures = [architecture_for(cfg.model.models, pid, k) for pid in range(k)]
        self.rounds_path, self.clients_path = folder / ROUNDS_CSV, folder / CLIENTS_CSV
        atomic_write_text(self.rounds_path, csv_text([list(round_columns()), *map(round_row, kept)]))
        clients = [row for record in kept for row in client_rows(record, self.architectures)]
        atomic_write_text(self.clients_path, csv_text([list(client_columns()), *clients]))

    def write(self, record: dict[str, Any]) -> None:
        append_text(self.rounds_path, csv_text([round_row(record)]))
        append_text(self.clients_path, csv_text(client_rows(record, self.architectures)))

    def close(self) -> None:
        """Nothing is held open between rounds."""


class RunLogs:
    """The loggers ``log`` asks for, told of every round (``write``) and closed at the end."""

    def __init__(self, logs: list[RoundLog]) -> None:
        self.logs = logs

    @classmethod
    def open(cls, cfg: ExperimentConfig, kept: list[dict[str, Any]]) -> RunLogs:
        """The run's loggers in its out-dir (none without one); ``kept``: a resumed run's rounds."""
        targets = log_targets(cfg.run.log) if cfg.run.out_dir else []
        folder = Path(cfg.run.out_dir)
        logs: list[RoundLog] = []
        if "csv" in targets:
            logs.append(CsvLog(cfg, folder, kept))
        if "tensorboard" in targets:
            logs.append(TensorBoardLog(folder, start_round=len(kept) + 1))
        return cls(logs)

    def write(self, record: dict[str, Any]) -> None:
        for log in self.logs:
            log.write(record)

    def close(self) -> None:
        for log in self.logs:
            log.close()
