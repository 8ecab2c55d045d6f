"""SIGINT and SIGTERM, at any point of a run or a sweep, on either engine: exit 130 or 143,
results.json marked interrupted, no temp or offload file left, no traceback, no deadlock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-clients", "3", "--set", "local-epochs=1", "--set", "distill-epochs=1"]
TINY += ["--set", "transfer-size=60", "--rounds", "500"]
# where the signal lands: seconds after the run's first round is recorded (None: as soon as
# results.json exists, i.e. during the hello or the first round)
POINTS = [None, 0.0, 0.4]
EXIT_S = 60  # a run that has not ended this long after the signal is deadlocked


def _start(args: list[str], tmp_path: Path, own_tmp: bool = True) -> tuple[subprocess.Popen, Path]:
    """``own_tmp``: the run's $TMPDIR is a fresh folder (offloaded client states go there; not
    for Ray, whose socket paths under it must stay short)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"TMPDIR": str(scratch)} if own_tmp else {})}
    command = [sys.executable, "-m", "experiments.cli", *args]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, scratch


def _wait_for(proc: subprocess.Popen, ready, what: str, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} never happened: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)


def _has_round(folder: Path) -> bool:
    rounds = folder / "rounds.jsonl"
    return rounds.exists() and rounds.stat().st_size > 0


def _stop(proc: subprocess.Popen, signum: int, times: int = 1) -> str:
    """Send ``signum`` (``times`` in a row, as an impatient user does) and wait for the exit."""
    for _ in range(times):
        proc.send_signal(signum)
        time.sleep(0.05)
    try:
        _, stderr = proc.communicate(timeout=EXIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit {EXIT_S} s after {signal.Signals(signum).name}: deadlocked")
    return stderr


def _assert_clean_interrupt(
    proc, stderr: str, signum: int, runs: list[Path], scratch: Path, reason=True
) -> None:
    """``reason``: the runs say which signal (a Ray task only learns of a KeyboardInterrupt)."""
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    for run in runs:
        saved = json.loads((run / "results.json").read_text())
        assert saved["status"] == "interrupted", run
        name = signal.Signals(signum).name
        assert not reason or ("Ctrl-C" if signum == signal.SIGINT else name) in saved["status_reason"]
        assert not list(run.rglob("*.tmp")), f"temp files left in {run}"
    assert not list(scratch.iterdir()), "offloaded client states left behind"


@pytest.mark.parametrize("point", POINTS, ids=lambda p: "at-start" if p is None else f"{p}s-after-round-1")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_an_inprocess_run_cleanly(tmp_path, signum, point):
    out = tmp_path / "run"
    args = ["run", *TINY, "--engine", "inprocess", "--set", "workers=2", "--set", "offload-idle=true"]
    proc, scratch = _start([*args, "--out", str(out)], tmp_path)
    if point is None:
        _wait_for(proc, (out / "results.json").exists, "results.json")
    else:
        _wait_for(proc, lambda: _has_round(out), "round 1")
        time.sleep(point)
    stderr = _stop(proc, signum, times=3 if point == 0.4 else 1)
    _assert_clean_interrupt(proc, stderr, signum, [out], scratch)


LONG_SWEEP = textwrap.dedent(
    """
    name = "long"
    [base]
    engine = "inprocess"
    num-clients = 3
    rounds = 500
    local-epochs = 1
    distill-epochs = 1
    transfer-size = 60
    offload-idle = true
    [grid]
    seed = [0, 1]
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_a_sweep_and_its_runs_in_flight_cleanly(tmp_path, signum):
    sweep = tmp_path / "long.toml"
    sweep.write_text(LONG_SWEEP)
    out = tmp_path / "sweep"
    proc, scratch = _start(["sweep", str(sweep), "--out", str(out), "--workers", "2"], tmp_path)
    runs = lambda: sorted((out / "runs").glob("*"))  # noqa: E731
    _wait_for(proc, lambda: len(runs()) == 2 and all(_has_round(r) for r in runs()), "a round of both runs")
    stderr = _stop(proc, signum)
    _assert_clean_interrupt(proc, stderr, signum, runs(), scratch)
    table = out / "runs.jsonl"
    assert not table.exists() or table.read_text() == "", "an interrupted run is not a finished row"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_a_sweep_on_ray_and_its_tasks_cleanly(tmp_path, signum):
    sweep = tmp_path / "long.toml"
    sweep.write_text(LONG_SWEEP.replace("offload-idle = true", ""))
    out = tmp_path / "sweep"
    args = ["sweep", str(sweep), "--out", str(out), "--executor", "ray"]
    proc, scratch = _start(args, tmp_path, own_tmp=False)
    runs = lambda: sorted((out / "runs").glob("*"))  # noqa: E731
    limit = 300
    _wait_for(proc, lambda: len(runs()) == 2 and all(_has_round(r) for r in runs()), "both runs", limit)
    stderr = _stop(proc, signum)
    _assert_clean_interrupt(proc, stderr, signum, runs(), scratch, reason=False)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_a_ray_run_cleanly(tmp_path, signum):
    out = tmp_path / "run"
    proc, scratch = _start(["run", *TINY, "--engine", "ray", "--out", str(out)], tmp_path, own_tmp=False)
    _wait_for(proc, lambda: _has_round(out), "round 1", limit=300)
    stderr = _stop(proc, signum)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["status"] == "interrupted" and not list(out.rglob("*.tmp"))


HALF_REPLY = """
import os, struct, sys, threading, time
from pathlib import Path
from server.process_pool import ProcessPool

def half_reply(flag):
    # in a worker: start a 1 MB reply, send 10 bytes of it, hang (killed there by stop())
    result_queue = sys._getframe(1).f_locals["result_queue"]
    os.write(result_queue._writer.fileno(), struct.pack("!i", 1 << 20) + b"x" * 10)
    Path(flag).touch()
    time.sleep(600)

if __name__ == "__main__":
    flag = sys.argv[1]
    pool = ProcessPool(dict, workers=1)
    pool._pool().submit(half_reply, flag)
    while not os.path.exists(flag):
        time.sleep(0.05)
    time.sleep(0.5)  # the executor's thread now reads a reply that never ends
    stopper = threading.Thread(target=pool.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    print("blocked" if stopper.is_alive() else "stopped", flush=True)
    if stopper.is_alive():
        os._exit(1)
"""


def test_stopping_the_pool_never_blocks_on_a_reply_cut_in_half(tmp_path):
    """What made one Ctrl-C in about ten hang the in-process engine for good: a worker killed
    while sending its reply left the pool's shutdown waiting on a pipe that never ends."""
    script = tmp_path / "half_reply.py"
    script.write_text(HALF_REPLY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "flag")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "stopped"), proc.stderr[-2000:]
