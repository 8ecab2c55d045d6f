"""Writing one run's results: results.json (config, environment, status, summary) rewritten
atomically, and rounds.jsonl appended once per round (fedkd/results_files.py has the formats and
the reader). A killed run leaves a complete results.json and exactly its finished rounds.
"""

from __future__ import annotations

import math
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fedkd.config import ExperimentConfig, as_dict
from fedkd.config_doc import render_toml
from fedkd.environment import environment_info
from fedkd.errors import ConfigError
from fedkd.metric_specs import distinct, recorded_fields, recorded_names
from fedkd.results_files import (
    CONFIG_FILE,
    INTERRUPTED,
    RESULTS_FILE,
    ROUNDS_FILE,
    append_json_line,
    atomic_write_json,
    atomic_write_text,
    json_safe,
    load_results,
    load_run_config,
    mark_interrupted,
    saved_run_config,
    write_results,
    write_rounds,
)

# Re-exported: callers (engines, sweeps, the CLI) import these from here.
__all__ = [
    "CONFIG_FILE",
    "INTERRUPTED",
    "RESULTS_FILE",
    "ROUNDS_FILE",
    "RunResults",
    "atomic_write_json",
    "atomic_write_text",
    "default_out_dir",
    "environment_info",
    "json_safe",
    "load_results",
    "load_run_config",
    "mark_interrupted",
    "prepare_out_dir",
    "round_line",
    "saved_run_config",
    "write_config_toml",
]


def prepare_out_dir(out_dir: str | Path, overwrite: bool = True) -> Path:
    """Make sure results can be written to ``out_dir`` *before* any work: a folder (created if
    missing) that this process can write to; without ``overwrite``, one that holds no results."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out-dir {str(path)!r} is a file; allowed: a folder (new or existing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"out-dir {str(path)!r} cannot be created: {exc.strerror or exc}") from None
    try:  # a probe of its own: runs started side by side must not remove each other's
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        why = f"out-dir {str(path)!r} is not writable ({exc.strerror or exc})"
        raise ConfigError(f"{why}; allowed: a folder you can write to") from None
    if not overwrite and (path / RESULTS_FILE).exists():
        raise ConfigError(
            f"{path / RESULTS_FILE} already exists; allowed: another --out, or --overwrite to replace it"
        )
    return path


def default_out_dir(cfg: ExperimentConfig, now: datetime | None = None, base: str = "runs") -> Path:
    """Where a run without out-dir lands: runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS>, relative
    to the working folder, created here; a name already taken gets -2, -3, ... Creating the
    folder is what reserves it, so two processes started in the same second never share one."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.fusion.algorithm}-{cfg.data.dataset}-{stamp}"
    Path(base).mkdir(parents=True, exist_ok=True)
    path, n = Path(base) / name, 2
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path, n = Path(base) / f"{name}-{n}", n + 1


# what ``final`` holds of the last evaluated round, besides the recorded metrics' round means
FINAL_KEYS = (
    "alma",
    "alma_se",
    "alma_matched",
    "alma_matched_se",
    "val_alma",
    "global_acc",
    "self_weight",
    "round",
)
# the fields of a round record (rounds.jsonl) besides the recorded metrics' (server/strategy.py
# writes them; tests/test_engines.py holds a real record to this list)
ROUND_FIELDS = (
    "round",
    "evaluated",
    "alma",
    "alma_std",
    "alma_min",
    "alma_se",
    "alma_clients",
    "alma_matched",
    "alma_matched_std",
    "alma_matched_min",
    "alma_matched_se",
    "alma_matched_clients",
    "val_alma",
    "client_matched_acc",
    "client_global_acc",
    "client_val_acc",
    "private_steps",
    "transfer_steps",
    "pretrain_steps",
    "server_steps",
    "client_test_size",
    "private_samples",
    "transfer_samples",
    "self_weight",
    "global_acc",
    "client_acc",
    "weights",
    "bytes_up",
    "bytes_down",
    "wall_s",
    "compute_s",
    "server_compute_s",
    "failed_clients",
    "rolled_back",
    "participants",
    "epsilon",
)


def final_keys() -> tuple[str, ...]:
    return distinct((*FINAL_KEYS, "total_wall_s", *recorded_names()), "results.json's final")


def check_record_names() -> None:
    """Before round 1: no recorded metric is named like a field of fedkd's outputs (each writer
    checks its own columns again)."""
    distinct((*ROUND_FIELDS, *recorded_fields()), "the round record")
    final_keys()


def earlier_wall_s(rounds: list[dict[str, Any]], final: dict[str, Any] | None) -> float:
    """Wall seconds the earlier invocations of a resumed run spent up to its last kept round: the
    total at their last evaluated round plus the kept rounds after it (0 for a fresh run)."""
    after = sum(float(r.get("wall_s") or 0) for r in rounds if r["round"] > ((final or {}).get("round") or 0))
    return float((final or {}).get("total_wall_s") or 0) + after


class RunResults:
    """One run's results: results.json (summary) and rounds.jsonl (one line per round).

    ``append`` adds the round's line to rounds.jsonl, then rewrites the small results.json
    atomically (``final``, ``rounds_done``); the rounds also stay in memory (``rounds``).
    ``rounds``: those a resumed run keeps (rounds.jsonl is rewritten with exactly them, which
    also drops a line torn by the kill); ``final``: its summary so far.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        path: str | Path | None,
        rounds: list[dict[str, Any]] | None = None,
        final: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self.started = time.perf_counter()
        self.rounds: list[dict[str, Any]] = list(rounds or [])
        self.earlier_wall_s = earlier_wall_s(self.rounds, final)  # a resumed run's earlier invocations
        self.payload: dict[str, Any] = {
            "config": as_dict(cfg),  # nested by section, as report and plot readers expect
            "run_config": cfg.to_run_config(),  # flat kebab-case keys: `fedkd run --config` reads them
            "environment": environment_info(),
            "status": "running",  # completed | stopped | interrupted | failed, when it ends
            "weights_axes": (
                "weights[i][j]: how much participants[i] (the student, row) learns from participants[j], "
                "over each round's participants"
            ),
            "rounds_file": ROUNDS_FILE,  # the per-round records, one JSON line each, beside this file
            "rounds_done": len(self.rounds),
            "final": final,
        }
        if self.rounds_path is not None:
            write_rounds(self.rounds_path, self.rounds)  # a fresh run never shows an old run's rounds

    @property
    def final(self) -> dict[str, Any] | None:
        """The last evaluated round's scores (None before one): ``alma``, ``global_acc``, ..."""
        return self.payload["final"]

    @property
    def rounds_path(self) -> Path | None:
        return self.path.parent / ROUNDS_FILE if self.path is not None else None

    def append(self, record: dict[str, Any]) -> None:
        """Add a round; ``final`` follows the last evaluated round."""
        self.rounds.append(record)
        if self.rounds_path is not None:
            append_json_line(self.rounds_path, record)
        self.payload["rounds_done"] = len(self.rounds)
        if record.get("evaluated", True):
            self.payload["final"] = {key: record.get(key) for key in final_keys() if key != "total_wall_s"}
            self.payload["final"]["total_wall_s"] = self.earlier_wall_s + time.perf_counter() - self.started
        self.flush()

    def finish(self, status: str, reason: str | None = None, best_effort: bool = False) -> None:
        """Mark how the run ended, so a partial file is never mistaken for a finished one.
        ``best_effort``: a folder that takes no more writes (full, read-only) keeps its last file."""
        self.payload["status"] = status
        if reason:
            self.payload["status_reason"] = reason
        try:
            self.flush()
        except OSError:
            if not best_effort:
                raise

    def flush(self) -> None:
        if self.path is not None:
            write_results(self.path, self.payload)


def write_config_toml(folder: str | Path, cfg: ExperimentConfig) -> Path:
    """config.toml beside results.json: the run's every key but out-dir, commented."""
    header = [
        f"The config of the run whose {RESULTS_FILE} is beside this file (out-dir: {cfg.run.out_dir}).",
        "Repeat the run (the same numbers on CPU) with: fedkd run --config <this file>",
    ]
    path = Path(folder) / CONFIG_FILE
    atomic_write_text(path, render_toml(cfg, header, exclude=("out-dir",)))
    return path


def final_line(final: dict[str, Any]) -> str:
    """The run's last evaluated scores in one line: the headline ALMA (matched test sample when
    scored), the own-split ALMA and global accuracy."""
    matched = final.get("alma_matched")
    head = (
        f"final ALMA {matched:.4f} (matched test) | own split {final['alma']:.4f}"
        if matched is not None and math.isfinite(matched)
        else f"final ALMA {final['alma']:.4f}"
    )
    return head + f" | global acc {final['global_acc']:.4f}"


def round_line(record: dict[str, Any], total_rounds: int) -> str:
    """One human-readable line per round."""
    failed = len(record["failed_clients"])
    matched = record.get("alma_matched")
    scores = (
        (
            f" | ALMA {matched:.4f} ± {record['alma_matched_se']:.4f} SE (matched test;"
            f" own split {record['alma']:.4f})"
            if matched is not None and math.isfinite(matched)
            else f" | ALMA {record['alma']:.4f} ± {record['alma_se']:.4f} SE (min {record['alma_min']:.4f},"
            f" {record.get('alma_clients', 0)} clients)"
        )
        + f" | global acc {record['global_acc']:.4f}"
        if record.get("evaluated", True)
        else " | not evaluated"
    )
    self_weight = record.get("self_weight")
    return (
        f"round {record['round']:>3}/{total_rounds}"
        + scores
        + (
            f" | self-weight {self_weight:.2f}"
            if self_weight is not None and math.isfinite(self_weight)
            else ""
        )
        + f" | up {record['bytes_up'] / 1e3:.1f} kB down {record['bytes_down'] / 1e3:.1f} kB"
        f" | {record['wall_s']:.2f} s"
        + (f" | {failed} dropped" if failed else "")
        + (f" | eps <= {max(record['epsilon'].values()):.3g}" if record.get("epsilon") else "")
    )
