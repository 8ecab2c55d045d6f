"""The files of one run, and how to read them back.

``results.json``: config, environment, status and the summary (``final``), rewritten atomically
when they change. ``rounds.jsonl`` beside it: one JSON line per finished round, appended (one
write, then fsync), so a run of many rounds never rewrites what it already wrote and a killed
run leaves exactly its finished rounds. ``load_results`` puts the two together again, and still
reads results.json files from before rounds.jsonl (rounds inline). Light on purpose (json and
pathlib only): `fedkd plot` and `fedkd report` read runs without importing torch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedkd.atomic import atomic_write
from fedkd.errors import ConfigError

RESULTS_FILE = "results.json"
ROUNDS_FILE = "rounds.jsonl"  # beside results.json: one line per finished round
CONFIG_FILE = "config.toml"  # beside results.json: `fedkd run --config DIR/config.toml` repeats the run
INTERRUPTED = "interrupted by the user (Ctrl-C)"
WRITE_WAIT_S = 5.0  # longest wait for another writer of results.json before writing anyway
log = logging.getLogger("flwr.fedkd")
_writing = threading.Lock()
_marked: dict[Path, dict[str, str]] = {}  # results file -> the status marked from outside its run


def json_safe(value: Any) -> Any:
    """JSON has no NaN: write null for non-finite floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False))


def json_line(record: dict[str, Any]) -> str:
    """One record as one compact line (no indent: a K x K matrix stays one line)."""
    return json.dumps(json_safe(record), allow_nan=False, separators=(",", ":")) + "\n"


def append_json_line(path: str | Path, record: dict[str, Any]) -> None:
    """One complete line per write, then fsync: a crash loses at most this line, never earlier ones."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, json_line(record).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def write_rounds(path: str | Path, rounds: list[dict[str, Any]]) -> None:
    """Replace the rounds file with exactly these rounds (a fresh run: none; a resumed run: the
    rounds it keeps, which also cuts a torn last line)."""
    atomic_write_text(path, "".join(json_line(r) for r in rounds))


def read_json_lines(path: str | Path, key: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON objects holding ``key`` in a JSON-lines file, in order, and the 1-based numbers
    of the non-blank lines that are not (torn by a kill mid-write, or damaged)."""
    path = Path(path)
    if not path.exists():
        return [], []
    records, damaged = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and key in record:
            records.append(record)
        elif line.strip():
            damaged.append(number)
    return records, damaged


def read_rounds(path: str | Path) -> list[dict[str, Any]]:
    """The round records in a rounds file, in order; damaged lines skipped with a warning."""
    rounds, damaged = read_json_lines(path, "round")
    if damaged:
        log.warning("%s: skipped damaged line(s) %s", path, ", ".join(map(str, damaged)))
    return rounds


def results_path(path: str | Path) -> Path:
    """A results.json, given the file or the run folder."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def load_results(path: str | Path) -> dict[str, Any]:
    """A run's results.json with its ``rounds`` list put back (from rounds.jsonl, or inline in
    files written before it). ``path``: the file or its folder. Raises OSError or ValueError
    when results.json cannot be read."""
    path = results_path(path)
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds no JSON object")
    if "rounds" not in payload:
        payload["rounds"] = read_rounds(path.parent / payload.get("rounds_file", ROUNDS_FILE))
    return payload


def saved_run_config(payload: dict[str, Any]) -> dict[str, Any]:
    """The flat run_config of a results.json payload (older files only have the nested config)."""
    if isinstance(payload.get("run_config"), dict):
        return dict(payload["run_config"])
    flat: dict[str, Any] = {}
    for name, section in payload["config"].items():  # a plugin algorithm's options: (key, value) pairs
        flat.update(dict(section) if name == "options" else section)
    return flat


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


def failure_reason(exc: BaseException) -> str:
    """Why a run failed, in one line: a file that could not be written is named with the OS's
    reason (disk full, read-only), anything else as ``Type: message``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"cannot write {exc.filename}: {exc.strerror}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}"[:500]


def saved_failure(path: str | Path) -> str | None:
    """The reason results.json gives for a failed run (a Ray run fails on another thread)."""
    try:
        payload = load_results(path)
    except (OSError, ValueError):
        return None
    return payload.get("status_reason") if payload.get("status") == "failed" else None


@contextmanager
def _one_writer() -> Iterator[None]:
    """results.json has one writer at a time in this process; a writer stuck on a dead disk for
    WRITE_WAIT_S does not keep the watchdog (experiments/stop_signals.py) from marking it."""
    held = _writing.acquire(timeout=WRITE_WAIT_S)
    try:
        yield
    finally:
        if held:
            _writing.release()


def write_results(path: str | Path, payload: dict[str, Any]) -> None:
    """Rewrite a run's results.json (atomically) from the run itself: a status marked from
    outside the run (``mark_interrupted``) stays, whatever the run writes after it."""
    with _one_writer():
        payload.update(_marked.get(Path(path).absolute(), {}))
        atomic_write_json(path, payload)


def mark_interrupted(path: str | Path, reason: str = INTERRUPTED) -> None:
    """Mark a running run's results as interrupted (rounds kept), from outside the run (a watchdog,
    an engine stopping its workers): never in the middle of the run's own write, and final for
    what the run writes later in this process (its thread may still be finishing a round)."""
    with _one_writer():
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            payload = None  # not written yet: what the run writes first is marked
        if payload is not None and payload.get("status") != "running":
            return  # it ended on its own
        marked = _marked[Path(path).absolute()] = {"status": "interrupted", "status_reason": reason}
        if payload is not None:
            atomic_write_json(path, {**payload, **marked})
