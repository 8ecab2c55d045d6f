"""One owner per run folder: while a run (or a sweep) is alive, a second run, --overwrite or
--resume on its folder is refused in one line naming the owner's PID, and nothing there changes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from clients.client_app import make_client_app
from experiments.cli import main
from experiments.engines import run_inprocess
from fedkd.folder_lock import RUN_LOCK, SWEEP_LOCK
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
HOLDER = (
    "import sys\n"
    "from fedkd.folder_lock import folder_lock\n"
    "with folder_lock(sys.argv[1], sys.argv[2]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


@contextmanager
def held_by_another_process(folder: Path, name: str = RUN_LOCK) -> Iterator[subprocess.Popen]:
    """A live owner of ``folder`` in a process of its own, until the block ends."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


def locked(folder: Path, name: str = RUN_LOCK) -> bool:
    """Whether some open file holds the folder's lock (a fresh open conflicts even in-process)."""
    with open(folder / name, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _live_run_folder(folder: Path) -> None:
    """What a live run's folder holds mid-way: results, two rounds, a client checkpoint."""
    cfg = tiny_config(rounds=4, **{"out-dir": str(folder)})
    payload = {"status": "running", "run_config": cfg.to_run_config(), "rounds_file": "rounds.jsonl"}
    (folder / "results.json").write_text(json.dumps(payload))
    (folder / "rounds.jsonl").write_text('{"round": 1}\n{"round": 2}\n')
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "client-0.r2.pt").write_bytes(b"model")


@pytest.mark.parametrize(
    "args",
    [["--out", "{d}"], ["--out", "{d}", "--overwrite"], ["--resume", "{d}"]],
    ids=["second-run", "overwrite", "resume"],
)
def test_a_live_run_folder_is_refused_in_one_line_naming_its_owner(tmp_path, args):
    folder = tmp_path / "live"
    folder.mkdir()
    _live_run_folder(folder)
    before = _snapshot(folder)
    with held_by_another_process(folder) as owner:
        tiny = ["--engine", "inprocess", "--rounds", "1", "--num-clients", "3"] if "--out" in args else []
        result = CliRunner().invoke(main, ["run", *[a.format(d=folder) for a in args], *tiny])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert f"PID {owner.pid}" in result.output and str(folder) in result.output
        after = _snapshot(folder)
    after.pop(RUN_LOCK)  # the owner wrote its PID there
    before.pop(RUN_LOCK, None)
    assert after == before  # no checkpoint removed, no round added or cut


def test_the_run_holds_its_folder_from_the_first_round_to_the_last(tmp_path):
    """The ServerApp owns the folder itself, so `flwr run` and sweeps are covered without the CLI."""
    folder = tmp_path / "run"
    cfg = tiny_config(rounds=2, **{"out-dir": str(folder)})
    app, seen = make_client_app(cfg), []

    def probing(msg, context):
        seen.append(locked(folder))
        return app(msg, context)

    run_inprocess(cfg, client_app=probing)
    assert seen and all(seen)  # held during every client call of every round
    assert not locked(folder)  # released when the run ends
    assert (folder / RUN_LOCK).read_text().strip() == str(os.getpid())


def test_a_killed_owner_leaves_no_stale_lock(tmp_path):
    with held_by_another_process(tmp_path) as owner:
        assert locked(tmp_path)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        assert not locked(tmp_path)


def test_sweeps_use_the_same_lock(tmp_path):
    from tests.test_sweep import SMOKE

    out = tmp_path / "smoke"
    out.mkdir()
    with held_by_another_process(out, SWEEP_LOCK) as owner:
        result = CliRunner().invoke(main, ["sweep", str(SMOKE), "--out", str(out)])
        assert result.exit_code == 2 and f"fedkd sweep (PID {owner.pid})" in result.output
    assert not (out / "runs.jsonl").exists()


def test_a_folder_that_cannot_hold_the_lock_is_one_line(tmp_path):
    _live_run_folder(tmp_path)
    (tmp_path / RUN_LOCK).mkdir()  # any OSError opening the lock file (as root, chmod blocks nothing)
    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "cannot be locked for this fedkd run" in result.output
    assert len(result.output.strip().splitlines()) == 1
