"""SIGINT and SIGTERM, at any point of a run or a sweep, on either engine: exit 130 or 143,
results.json marked interrupted, no temp or offload file left, no traceback, no deadlock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cli_processes import ROOT, start_cli, stop, tiny_sweep, wait_for

TINY = ["--num-clients", "3", "--set", "local-epochs=1", "--set", "distill-epochs=1"]
TINY += ["--set", "transfer-size=60", "--rounds", "500"]
# where the signal lands: seconds after the run's first round is recorded (None: as soon as
# results.json exists, i.e. during the hello or the first round)
POINTS = [None, 0.0, 0.4]


def _has_round(folder: Path) -> bool:
    rounds = folder / "rounds.jsonl"
    return rounds.exists() and rounds.stat().st_size > 0


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
    proc, scratch = start_cli([*args, "--out", str(out)], tmp_path)
    if point is None:
        wait_for(proc, (out / "results.json").exists, "results.json")
    else:
        wait_for(proc, lambda: _has_round(out), "round 1")
        time.sleep(point)
    stderr = stop(proc, signum, times=3 if point == 0.4 else 1)
    _assert_clean_interrupt(proc, stderr, signum, [out], scratch)


LONG_SWEEP = tiny_sweep("long", "seed = [0, 1]", rounds=500, **{"offload-idle": True})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_a_sweep_and_its_runs_in_flight_cleanly(tmp_path, signum):
    sweep = tmp_path / "long.toml"
    sweep.write_text(LONG_SWEEP)
    out = tmp_path / "sweep"
    proc, scratch = start_cli(["sweep", str(sweep), "--out", str(out), "--workers", "2"], tmp_path)
    runs = lambda: sorted((out / "runs").glob("*"))  # noqa: E731
    wait_for(proc, lambda: len(runs()) == 2 and all(_has_round(r) for r in runs()), "a round of both runs")
    stderr = stop(proc, signum)
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
    proc, scratch = start_cli(args, tmp_path, own_tmp=False)
    runs = lambda: sorted((out / "runs").glob("*"))  # noqa: E731
    limit = 300
    wait_for(proc, lambda: len(runs()) == 2 and all(_has_round(r) for r in runs()), "both runs", limit)
    stderr = stop(proc, signum)
    _assert_clean_interrupt(proc, stderr, signum, runs(), scratch, reason=False)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_a_ray_run_cleanly(tmp_path, signum):
    """With offload-idle asked for, $TMPDIR holds nothing of fedkd's afterwards: only Ray's own
    session folder (its logs, which Ray keeps by design)."""
    out = tmp_path / "run"
    scratch = Path(tempfile.mkdtemp(prefix="fk", dir="/tmp"))
    try:
        args = ["run", *TINY, "--engine", "ray", "--set", "offload-idle=true", "--out", str(out)]
        proc, _ = start_cli(args, tmp_path, scratch=scratch)
        wait_for(proc, lambda: _has_round(out), "round 1", limit=300)
        stderr = stop(proc, signum)
        assert proc.returncode == 128 + signum, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        saved = json.loads((out / "results.json").read_text())
        assert saved["status"] == "interrupted" and not list(out.rglob("*.tmp"))
        assert {path.name for path in scratch.iterdir()} <= {"ray"}, sorted(scratch.iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


HALF_REPLY = """
import os, struct, sys, threading, time
from pathlib import Path
from server.inprocess.pool import ProcessPool

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


LOST_SIGNAL = """
import os, signal, time
from experiments.stop_signals import stop_on_signals

# the signal lands in an at-fork hook, where Python prints an exception and goes on
os.register_at_fork(after_in_parent=lambda: os.kill(os.getpid(), signal.SIGTERM))
try:
    with stop_on_signals():
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        time.sleep(20)  # the rest of the run
        print("the block went on", flush=True)
except KeyboardInterrupt as stop:
    print("interrupted", stop.signum, flush=True)
"""


def test_a_signal_that_lands_where_python_drops_exceptions_still_stops_at_once(tmp_path):
    """A run forks its workers: a signal in Python's at-fork hooks had its Interrupted printed
    (a traceback) and dropped, and the run went on to exit 0 as if never stopped."""
    script = tmp_path / "lost_signal.py"
    script.write_text(LOST_SIGNAL)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert (proc.stdout, proc.stderr) == (f"interrupted {int(signal.SIGTERM)}\n", "")
    assert time.monotonic() - start < 15  # at once: not after the run, nor after a watchdog's grace


DEFERRED = """
import os, pickle, signal
from experiments.stop_signals import deferred_signals, raise_if_signalled, stop_on_signals

with deferred_signals():
    os.kill(os.getpid(), signal.SIGTERM)
    print("the write went on", flush=True)  # a journal write is never cut half-way
    try:
        with stop_on_signals():
            print("a run started", flush=True)
    except KeyboardInterrupt as stop:
        print("the run never started", flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # a second signal changes nothing
    try:
        raise_if_signalled()
    except KeyboardInterrupt as stop:
        copy = pickle.loads(pickle.dumps(stop))  # as a pool worker's interruption reaches its parent
        print("interrupted", copy.signum, copy.reason, flush=True)
"""


def test_a_deferred_signal_waits_for_a_safe_point_and_stops_the_next_run_before_it_starts(tmp_path):
    script = tmp_path / "deferred.py"
    script.write_text(DEFERRED)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = ["the write went on", "the run never started", "interrupted 15 interrupted by SIGTERM"]
    assert proc.stdout.splitlines() == expected, proc.stdout + proc.stderr


DISGUISED = """
import io, json, os, signal, sys
import torch
from experiments.engines import run_inprocess
from experiments.stop_signals import stop_on_signals
from fedkd.results_files import mark_interrupted
from clients.client_app import make_client_app
from tests.conftest import tiny_config

out = sys.argv[1]
cfg = tiny_config(rounds=4).with_overrides({"out-dir": out, "workers": 1})
real = make_client_app(cfg)

class SignalledWriter(io.BytesIO):
    calls = 0

    def write(self, data):
        SignalledWriter.calls += 1
        if SignalledWriter.calls == 3:  # lands in a Python callback of torch's C++ zip writer
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(data)

def client(message, context):
    if message.metadata.group_id == "2":
        torch.save(torch.zeros(100), SignalledWriter())  # the interruption comes back a RuntimeError
    return real(message, context)

try:
    with stop_on_signals(lambda why: mark_interrupted(os.path.join(out, "results.json"), why)):
        run_inprocess(cfg, client_app=client)
    print("the run went on", flush=True)
except KeyboardInterrupt as stop:
    print("interrupted", stop.signum, flush=True)
"""


def test_a_signal_a_c_extension_turns_into_its_own_error_still_stops_the_run(tmp_path):
    """torch.save turns a KeyboardInterrupt raised in its write callback into RuntimeError
    ("unexpected pos"): the client's reply was dropped as a failure and the run went on."""
    script = tmp_path / "disguised.py"
    script.write_text(DISGUISED)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout == f"interrupted {int(signal.SIGINT)}\n", proc.stdout + proc.stderr[-2000:]
    saved = json.loads((out / "results.json").read_text())
    rounds = (out / "rounds.jsonl").read_text().splitlines()
    assert saved["status"] == "interrupted" and len(rounds) == 1, (saved["status"], len(rounds))


@pytest.mark.slow
def test_a_ray_task_deaf_to_its_cancel_is_killed_before_the_driver_marks_its_results(tmp_path):
    """A task whose KeyboardInterrupt never surfaces (swallowed, or disguised by a C extension)
    went on writing results.json as running over the driver's interrupted mark."""
    import ray

    from experiments.sweep import PlannedRun
    from experiments.sweep_ray import _interrupt_tasks, _ray_runtime_env
    from tests.conftest import tiny_config

    results = tmp_path / "runs" / "deaf" / "results.json"
    results.parent.mkdir(parents=True)

    def deaf(path: str) -> None:
        from fedkd.results_files import atomic_write_json  # as a run writes results.json: never torn

        while True:
            try:
                while True:
                    atomic_write_json(path, {"status": "running"})
                    time.sleep(0.05)
            except KeyboardInterrupt:
                continue

    sigterm = signal.getsignal(signal.SIGTERM)  # _interrupt_tasks ignores it on the main thread
    ray.init(num_cpus=1, include_dashboard=False, runtime_env=_ray_runtime_env())
    try:
        task = ray.remote(deaf).remote(str(results))
        deadline = time.monotonic() + 60
        while not results.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        _interrupt_tasks(ray, {task: PlannedRun("deaf", {}, tiny_config())}, tmp_path, signal.SIGINT)
        time.sleep(1.0)  # what a live task would write after the mark
        assert json.loads(results.read_text())["status"] == "interrupted"
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, sigterm)


RESET = """
import os, signal
from experiments.stop_signals import stop_on_signals
from fedkd.errors import stopping

try:
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        signal.pause()
except KeyboardInterrupt:
    print("stopped", stopping() is None, flush=True)  # the block ended: nothing is stopping now
with stop_on_signals():
    print("next block", stopping() is None, flush=True)
"""


def test_a_stop_ends_with_its_block_so_a_later_run_is_not_stopping(tmp_path):
    """A notebook's second run after a Ctrl-C: client errors are errors again, not interruptions."""
    script = tmp_path / "reset.py"
    script.write_text(RESET)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ["stopped True", "next block True"], proc.stdout + proc.stderr[-2000:]
