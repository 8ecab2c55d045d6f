"""The results file of one run: written atomically after every round, never half-written."""

from __future__ import annotations

import json
import math
import platform
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fedkd.atomic import atomic_write
from fedkd.config import ConfigError, ExperimentConfig, as_dict

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.toml"  # beside results.json: `fedkd run --config DIR/config.toml` repeats the run


def json_safe(value: Any) -> Any:
    """JSON has no NaN: write null for non-finite floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


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
    probe = path / ".fedkd-write-probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"out-dir {str(path)!r} is not writable: {exc.strerror or exc}") from None
    if not overwrite and (path / RESULTS_FILE).exists():
        raise ConfigError(
            f"{path / RESULTS_FILE} already exists; allowed: another --out, or --overwrite to replace it"
        )
    return path


def default_out_dir(cfg: ExperimentConfig, now: datetime | None = None, base: str = "runs") -> Path:
    """Where a run without out-dir lands: runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS>, relative
    to the working folder; a name already taken gets -2, -3, ... (two runs in one second)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.fusion.algorithm}-{cfg.data.dataset}-{stamp}"
    path, n = Path(base) / name, 2
    while path.exists():
        path, n = Path(base) / f"{name}-{n}", n + 1
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False))


def environment_info() -> dict[str, str | bool]:
    import numpy
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": bool(torch.cuda.is_available()),
    }
    try:
        from importlib.metadata import version

        info["flwr"] = version("flwr")
        info["fedkd"] = version("fedkd")
    except Exception:  # noqa: BLE001 - metadata is informative only
        pass
    return info


class RunResults:
    """results.json of one run: config, environment, rounds so far, final metrics.

    ``append`` rewrites the file atomically after each round, so a killed run leaves a
    complete file describing the rounds it finished.
    """

    def __init__(self, cfg: ExperimentConfig, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.started = time.perf_counter()
        self.payload: dict[str, Any] = {
            "config": as_dict(cfg),  # nested by section, as report and plot readers expect
            "run_config": cfg.to_run_config(),  # flat kebab-case keys: `fedkd run --config` reads them
            "environment": environment_info(),
            "status": "running",  # completed | stopped | interrupted | failed, when it ends
            "weights_axes": "weights[k][j]: how much client k (the student, row) learns from client j",
            "rounds": [],
            "final": None,
        }

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.payload["rounds"]

    def append(self, record: dict[str, Any]) -> None:
        """Add a round; ``final`` follows the last evaluated round."""
        self.rounds.append(record)
        if record.get("evaluated", True):
            self.payload["final"] = {
                key: record.get(key) for key in ("alma", "alma_se", "global_acc", "self_weight", "round")
            }
            self.payload["final"]["total_wall_s"] = time.perf_counter() - self.started
        self.flush()

    def finish(self, status: str, reason: str | None = None) -> None:
        """Mark how the run ended, so a partial file is never mistaken for a finished one."""
        self.payload["status"] = status
        if reason:
            self.payload["status_reason"] = reason
        self.flush()

    def flush(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.payload)


def saved_run_config(payload: dict[str, Any]) -> dict[str, Any]:
    """The flat run_config of a results.json payload (older files only have the nested config)."""
    if isinstance(payload.get("run_config"), dict):
        return dict(payload["run_config"])
    return {key: value for section in payload["config"].values() for key, value in section.items()}


def load_run_config(path: str | Path) -> dict[str, Any]:
    """The config of the run whose results.json is ``path``, without its out-dir."""
    try:
        flat = saved_run_config(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(f"config file {str(path)!r} is not a fedkd {RESULTS_FILE}") from None
    flat.pop("out-dir", None)
    flat.pop("out_dir", None)
    return flat


def write_config_toml(folder: str | Path, cfg: ExperimentConfig) -> Path:
    """config.toml beside results.json: the run's every key but out-dir, commented."""
    from fedkd.config_doc import render_toml

    header = [
        f"The config of the run whose {RESULTS_FILE} is beside this file (out-dir: {cfg.run.out_dir}).",
        "Repeat the run (the same numbers on CPU) with: fedkd run --config <this file>",
    ]
    path = Path(folder) / CONFIG_FILE
    atomic_write_text(path, render_toml(cfg, header, exclude=("out-dir",)))
    return path


INTERRUPTED = "interrupted by the user (Ctrl-C)"


def mark_interrupted(path: Path) -> None:
    """Mark an existing results file as interrupted (rounds kept), from outside the run."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    if payload.get("status") == "running":
        payload.update(status="interrupted", status_reason=INTERRUPTED)
        atomic_write_json(path, payload)


def round_line(record: dict[str, Any], total_rounds: int) -> str:
    """One human-readable line per round."""
    failed = len(record["failed_clients"])
    scores = (
        f" | ALMA {record['alma']:.4f} ± {record['alma_se']:.4f} SE (min {record['alma_min']:.4f},"
        f" {record.get('alma_clients', 0)} clients)"
        f" | global acc {record['global_acc']:.4f}"
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
