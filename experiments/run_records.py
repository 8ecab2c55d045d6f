"""One record per run of a sweep: what runs.csv holds, its CSV form, and how a run's rounds
become one record.

runs.csv is the single source of every published number; a failed run is a row too (status
``failed``, no numbers), so a mean never leaves it out silently. Columns a run's rounds do not
carry (older runs: no step counts, no matched ALMA, no validation split) stay blank.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedkd.csv_cells import cell
from fedkd.errors import ConfigError
from fedkd.metric_specs import distinct, recorded_names

METRICS = ("alma", "alma_se", "global_acc", "self_weight")  # the final evaluated round's
# what a run cost, mean per round: kB up + down, clients' summed compute s, the server's compute s
COSTS = ("kb_per_round", "client_s_per_round", "server_s_per_round")
# the headline ALMA (each client on a label-mix-matched sample of the global test set), final round
MATCHED = ("alma_matched", "alma_matched_se")
# the evaluated round with the highest val_alma (ties: the later) and the scores at that round
AT_VAL = ("val_round", "alma_at_val", "alma_matched_at_val", "global_at_val")
# optimiser steps, mean per participating client and round: private data, transfer set, their
# sum; the server's own steps per round
STEPS = ("private_steps", "transfer_steps", "client_steps", "server_steps", "pretrain_steps")
NUMBERS = (*METRICS, *COSTS, *MATCHED, *AT_VAL, *STEPS)


def numbers() -> tuple[str, ...]:
    """runs.csv's numeric columns: NUMBERS, then each recorded metric's final round mean
    (fedkd/metric_specs.py; a plugin's too)."""
    return (*NUMBERS, *recorded_names())


OK, FAILED = "ok", "failed"


@dataclass(frozen=True)
class RunTable:
    axes: list[str]  # non-seed axes, in sweep order (columns and cell axes together)
    records: list[dict[str, Any]]  # one per run: axes (as text), "seed", NUMBERS (float), "status"


def finished(table: RunTable) -> list[dict[str, Any]]:
    return [r for r in table.records if r.get("status", OK) != FAILED]


def headline(table: RunTable) -> str:
    """The headline ALMA column: the label-mix-matched one once any run has it, else the
    own-split ALMA (older runs, whose tables stay as they were)."""
    return (
        "alma_matched"
        if any(math.isfinite(r.get("alma_matched", math.nan)) for r in table.records)
        else "alma"
    )


def at_val(key: str) -> str:
    """The column holding ``key`` (a headline ALMA or global accuracy) at the round chosen on validation."""
    return {"alma": "alma_at_val", "alma_matched": "alma_matched_at_val", "global_acc": "global_at_val"}[key]


def axis_text(value: Any) -> str:
    """One spelling per axis value, whether it comes from a sweep or back from CSV."""
    if isinstance(value, bool):
        return str(value).lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value).lower() if str(value) in ("True", "False") else str(value)
    return f"{number:g}"


# -- CSV -----------------------------------------------------------------------------------------
def write_runs_csv(table: RunTable) -> str:
    buffer = io.StringIO()
    fields = list(distinct([*table.axes, "seed", *numbers(), "status"], "runs.csv"))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in table.records:
        writer.writerow({k: cell(record.get(k, OK if k == "status" else math.nan)) for k in fields})
    return buffer.getvalue()


def read_runs_csv(text: str) -> RunTable:
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "seed" not in fields or "alma" not in fields:
        raise ConfigError("runs.csv needs the columns seed and alma")
    axes = fields[: fields.index("seed")]
    records = []
    for row in reader:
        record: dict[str, Any] = {a: axis_text(row[a]) for a in axes}
        record["seed"] = int(row["seed"])
        for metric in numbers():  # an older runs.csv lacks the later columns: nan
            record[metric] = float(row[metric]) if row.get(metric) else math.nan
        record["status"] = row.get("status") or OK
        records.append(record)
    return RunTable(axes, records)


# -- from a run's rounds -------------------------------------------------------------------------
def run_record(axes: list[str], row: dict[str, Any]) -> dict[str, Any]:
    """One runs.jsonl row -> its record; a failed row (or one whose results cannot be read) keeps
    only its axes, seed and status."""
    record: dict[str, Any] = {a: axis_text(row["axes"].get(a, "")) for a in axes}
    record["seed"] = int(row["axes"].get("seed", row["config"].get("seed", 0)))
    record.update(dict.fromkeys(numbers(), math.nan))
    if "history" not in row:
        return {**record, "status": FAILED}
    history = row["history"]
    final = history.get("final") or row["final"]
    for metric in (*METRICS, *recorded_names()):
        record[metric] = _float(final.get(metric))
    rounds = history["rounds"]
    evaluated = [r for r in rounds if r.get("evaluated", True)]
    last = next((r for r in reversed(evaluated) if r.get("round") == final.get("round")), None)
    if last is None and evaluated:
        last = evaluated[-1]
    for key in MATCHED:
        record[key] = _float((last or {}).get(key))
    record.update(val_choice(evaluated))
    record.update(run_costs(rounds))
    record.update(run_steps(rounds))
    return {**record, "status": OK}


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


def val_choice(evaluated: list[dict[str, Any]]) -> dict[str, float]:
    """AT_VAL: the evaluated round with the highest validation ALMA (ties: the later round, the
    one that trained longer) and its scores; all nan when no round has a finite val_alma."""
    scored = [r for r in evaluated if math.isfinite(_float(r.get("val_alma")))]
    if not scored:
        return {}
    chosen = max(scored, key=lambda r: (float(r["val_alma"]), r["round"]))
    return {
        "val_round": float(chosen["round"]),
        "alma_at_val": _float(chosen.get("alma")),
        "alma_matched_at_val": _float(chosen.get("alma_matched")),
        "global_at_val": _float(chosen.get("global_acc")),
    }


def run_costs(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """COSTS of one run: mean per round of kB on the wire (up + down), the clients' summed
    compute seconds and the server's compute seconds (FedDF's distillation, say)."""

    def mean(key: str) -> float:
        return finite_mean([float(r[key]) for r in rounds if r.get(key) is not None])

    return {
        "kb_per_round": finite_mean([(r["bytes_up"] + r["bytes_down"]) / 1e3 for r in rounds]),
        "client_s_per_round": mean("compute_s"),
        "server_s_per_round": mean("server_compute_s"),
    }


def round_steps(record: dict[str, Any]) -> tuple[float, float] | None:
    """(private, transfer) optimiser steps of one round, mean over the clients that took part
    (either dict's partition ids); None when the round records no step counts."""
    private, transfer = record.get("private_steps"), record.get("transfer_steps")
    if private is None and transfer is None:
        return None
    private, transfer = private or {}, transfer or {}
    clients = set(private) | set(transfer)
    if not clients:
        return None
    return sum(private.values()) / len(clients), sum(transfer.values()) / len(clients)


def run_steps(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """STEPS of one run, means over the rounds that record them (nan where none does)."""
    per_round = [s for s in map(round_steps, rounds) if s is not None]
    private = finite_mean([p for p, _ in per_round])
    transfer = finite_mean([t for _, t in per_round])
    server = finite_mean([float(r["server_steps"]) for r in rounds if r.get("server_steps") is not None])
    # pretraining on the labelled transfer set (FedMD), once per client: total per client, apart
    pretrained = [r["pretrain_steps"] for r in rounds if r.get("pretrain_steps") is not None]
    clients = {pid for r in rounds for pid in (r.get("private_steps") or {})}
    pretrain = sum(sum(d.values()) for d in pretrained) / max(len(clients), 1) if pretrained else math.nan
    return {
        "private_steps": private,
        "transfer_steps": transfer,
        "client_steps": private + transfer,
        "server_steps": server,
        "pretrain_steps": pretrain,
    }


def finite_mean(values: list[float]) -> float:
    arr = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan
