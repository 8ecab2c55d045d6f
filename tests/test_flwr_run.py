"""`flwr run .` with the pyproject defaults, as docs/engines.md tells a user to run it: a local
SuperLink on loopback, the run, then the SuperLink stopped. What the user reads is checked, and
what the run left in the process table."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedkd.results_files import load_results

ROOT = Path(__file__).resolve().parents[1]
FLWR = str(Path(sys.executable).with_name("flwr"))  # the CLI installed beside this interpreter

Process = tuple[int, str, str, int]  # ppid, state, name, start time (ticks after boot)


def _pids_using(marker: str) -> list[int]:
    """PIDs of processes whose command line mentions ``marker`` (our private FLWR_HOME)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def _table() -> dict[int, Process]:
    """Every process now: /proc/<pid>/stat read past the name (which may hold spaces)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(rest[1]), rest[0], name, int(rest[19]))
    return table


def _descendants(root: int, table: dict[int, Process]) -> dict[int, Process]:
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, process in table.items():
            if process[0] == parent and pid not in found:
                found[pid] = process
                frontier.append(pid)
    return found


def _remaining(seen: dict[int, Process]) -> dict[int, Process]:
    """Those of ``seen`` still in the table (same PID, same start time), zombies included."""
    now = _table()
    return {pid: now[pid] for pid, process in seen.items() if pid in now and now[pid][3] == process[3]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_until(done, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.slow
def test_flwr_run_is_quiet_and_leaves_no_process_behind(tmp_path):
    home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        # flwr starts flower-superlink / flower-superexec / flwr-simulation from PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # a SuperLink of our own, not one another job on this host already runs on the default ports
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
    }
    env.pop("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", None)  # what a user's shell has: Ray's tip is due
    out, log = tmp_path / "out", tmp_path / "flwr-run.log"
    overrides = f"num-clients=3 rounds=1 local-epochs=1 distill-epochs=1 transfer-size=60 out-dir='{out}'"
    seen: dict[int, Process] = {}
    try:
        setup = subprocess.run(
            [FLWR, "federation", "simulation-config", "@none/default", "local", "--num-supernodes", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        (link,) = _pids_using(f"{home}/local-superlink/")  # the SuperLink flwr started for us
        seen[link] = _table()[link]
        with log.open("w") as sink:
            run = subprocess.Popen(
                [FLWR, "run", ".", "--run-config", overrides, "--stream"],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
            deadline = time.monotonic() + 400
            while run.poll() is None and time.monotonic() < deadline:
                seen.update(_descendants(link, _table()))
                time.sleep(0.5)
            run.kill()
        output = log.read_text()
        assert run.wait() == 0, output[-3000:]
        saved = load_results(out / "results.json")
        assert saved["config"]["data"]["num_clients"] == 3
        assert len(saved["rounds"]) == 1 and saved["rounds"][0]["failed_clients"] == []
        assert 0.0 < saved["final"]["alma"] <= 1.0
        assert "round   1/1 | ALMA" in output
        assert "FutureWarning" not in output and "Manually terminating" not in output, output

        # The run's own processes (flwr-simulation, Ray's) end with it; the SuperLink and its
        # superexec are daemons until stopped. Flower's superexec never waits for the
        # flwr-simulation it started, so that one stays a zombie until the SuperLink stops.
        daemons = {link} | {pid for pid, process in seen.items() if process[0] == link}
        assert any(process[2] == "flwr-simulation" for process in seen.values()), seen

        def running() -> dict[int, Process]:
            return {pid: p for pid, p in _remaining(seen).items() if pid not in daemons and p[1] != "Z"}

        _wait_until(lambda: not running(), 120)
        assert running() == {}, "the run's processes outlived it"

        os.kill(link, signal.SIGTERM)  # docs/engines.md: stop the local SuperLink by its PID
        _wait_until(lambda: not _remaining(seen), 30)
        assert _remaining(seen) == {}, "left behind (zombies included) after the SuperLink stopped"
    finally:
        _stop([*_remaining(seen), *_pids_using(str(home))])
    assert _pids_using(str(home)) == []
