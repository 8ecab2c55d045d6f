"""`flwr run .` with the pyproject defaults (as a user runs it), on a local SuperLink."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedkd.results_files import load_results

ROOT = Path(__file__).resolve().parents[1]
FLWR = str(Path(sys.executable).with_name("flwr"))  # the CLI installed beside this interpreter


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


@pytest.mark.slow
def test_flwr_run_with_pyproject_defaults(tmp_path):
    home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        # flwr starts flower-superlink / flower-superexec / flwr-simulation from PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }
    out = tmp_path / "out"
    overrides = f"num-clients=3 rounds=1 local-epochs=1 distill-epochs=1 transfer-size=60 out-dir='{out}'"
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
        run = subprocess.run(
            [FLWR, "run", ".", "--run-config", overrides, "--stream"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        saved = load_results(out / "results.json")
        assert saved["config"]["data"]["num_clients"] == 3
        assert len(saved["rounds"]) == 1 and saved["rounds"][0]["failed_clients"] == []
        assert 0.0 < saved["final"]["alma"] <= 1.0
    finally:
        _stop(_pids_using(str(home)))
    assert _pids_using(str(home)) == []
