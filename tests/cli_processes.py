"""Running fedkd's CLI in a child process and stopping it as a user or a scheduler would: with a
signal, then checking what is left (tests/test_signals.py, tests/test_tune_signals.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXIT_S = 60  # a process that has not ended this long after the signal is deadlocked


def tiny_sweep(name: str, grid: str, **base: object) -> str:
    """A sweep file of tiny in-process runs (seconds each); ``base`` adds or replaces keys."""
    keys = {"engine": "inprocess", "num-clients": 3, "rounds": 1, "local-epochs": 1, "distill-epochs": 1}
    keys |= {"transfer-size": 60, **base}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in keys.items())
    return f'name = "{name}"\n[base]\n{lines}\n[grid]\n{grid}\n'


def start_cli(
    args: list[str], tmp_path: Path, own_tmp: bool = True, scratch: Path | None = None
) -> tuple[subprocess.Popen, Path]:
    """``own_tmp``: the run's $TMPDIR is a fresh folder (offloaded client states go there), or
    ``scratch`` (Ray's socket paths under it must stay short: not a folder below ``tmp_path``)."""
    if scratch is None:
        scratch = tmp_path / "tmp"
        scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"TMPDIR": str(scratch)} if own_tmp else {})}
    command = [sys.executable, "-m", "experiments.cli", *args]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, scratch


def wait_for(proc: subprocess.Popen, ready, what: str, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} never happened: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen, signum: int, times: int = 1) -> str:
    """Send ``signum`` (``times`` in a row, as an impatient user does) and wait for the exit;
    returns stderr (``proc.stdout_text``: what it printed)."""
    for _ in range(times):
        proc.send_signal(signum)
        time.sleep(0.05)
    try:
        proc.stdout_text, stderr = proc.communicate(timeout=EXIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit {EXIT_S} s after {signal.Signals(signum).name}: deadlocked")
    return stderr


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc: parent links)."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent_of[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = set(), [pid]
    while todo:
        above = todo.pop()
        below = {child for child, parent in parent_of.items() if parent == above} - found
        found |= below
        todo += below
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
