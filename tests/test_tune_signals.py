"""SIGINT and SIGTERM in `fedkd tune`, one study at a time or side by side: exit 130 or 143, no
traceback, no process left, the Optuna journal whole, and the same command resumes the tune."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cli_processes import ROOT, alive, descendants, start_cli, stop, tiny_sweep, wait_for

# 8 rounds a run: the signal, half a second after the first trial is scored, finds the tune mid-study
TUNE = tiny_sweep("tiny", "alpha = [0.5, 1.0]", rounds=8, **{"max-client-samples": 40})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_a_tune_cleanly_and_the_same_command_resumes_it(tmp_path, signum, workers):
    """Mid-study (a trial scored, the next one's run under way): exit 128 + signum, no traceback,
    no process left, the run in flight marked interrupted, the journal whole (no stale lock), and
    the same command again completes every study's trials."""
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(TUNE)
    out = tmp_path / "tune"
    args = ["tune", str(sweep), "--trials", "3", "--workers", str(workers), "--out", str(out)]
    proc, scratch = start_cli(args, tmp_path)
    rows = out / "runs.jsonl"
    wait_for(proc, lambda: rows.exists() and rows.read_text().count("\n") >= 1, "a scored trial", 300)
    time.sleep(0.5)
    children = descendants(proc.pid)
    stderr = stop(proc, signum)
    assert "chosen settings" not in proc.stdout_text, "the tune ended before the signal: make it longer"
    assert proc.returncode == 128 + signum, (proc.stdout_text, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    deadline = time.monotonic() + 10
    while any(alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [child for child in children if alive(child)], "worker processes outlived the tune"
    assert not (out / "optuna.journal.lock").exists() and not list(out.rglob("*.tmp"))
    finished = {json.loads(line)["id"] for line in rows.read_text().splitlines()}
    cut = ("interrupted", "completed", "not started")  # "completed": it ended just before its row
    for run in (out / "runs").iterdir():  # a run not in the table is never left "running"
        saved = run / "results.json"
        status = json.loads(saved.read_text())["status"] if saved.exists() else "not started"
        assert run.name in finished or status in cut, (run.name, status)
        assert saved.exists() or not (run / "rounds.jsonl").exists()
    assert not list(scratch.iterdir()), "offloaded client states left behind"

    again = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    with (out / "trials.csv").open() as handle:
        states = [row["state"] for row in csv.DictReader(handle)]
    assert states.count("complete") + states.count("failed") == 2 * 3  # 2 studies x 3 trials
    assert (out / "tuned.toml").exists()
