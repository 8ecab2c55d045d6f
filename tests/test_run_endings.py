"""A run that fails or stops ends in one line naming its status and reason, never a traceback:
exit 1 when it failed, 0 when it stopped as its config asked. A run folder that fills up or turns
read-only fails the run (never "completed" from the clients whose files happened to land)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import clients.client_app
import fedkd.results
from experiments.cli import main
from fedkd.results_files import load_results

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--engine", "inprocess", "--num-clients", "3", "--rounds", "2", "--set", "workers=1"]
TINY += ["--set", "local-epochs=1", "--set", "distill-epochs=1", "--set", "transfer-size=60"]

# (extra --set pairs, status in results.json, exit code, a fragment of the one line)
ENDINGS = [
    (["reply-timeout=0.001"], "failed", 1, "no reply within reply-timeout=0.001 s"),
    (["temperature=1e-300"], "failed", 1, "no client completed the round"),
    (["temperature=1e300"], "failed", 1, "OverflowError"),
    (["learning-rate=1e30", "algorithm=fedavg", "models=mlp"], "failed", 1, "NaN or inf"),
    (["learning-rate=1e30", "algorithm=feddf", "models=mlp"], "failed", 1, "NaN or inf"),
    (["mechanism=gaussian", "max-epsilon=1e-9"], "stopped", 0, "would exceed max-epsilon=1e-09"),
]


def _run(out: Path, sets: list[str]):
    args = ["run", *TINY, "--out", str(out)]
    for pair in sets:
        args += ["--set", pair]
    return CliRunner().invoke(main, args)


def _one_line_ending(result, out: Path, status: str, code: int, fragment: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(f"fedkd: run {status}:")]
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert load_results(out)["status"] == status


@pytest.mark.parametrize("sets, status, code, fragment", ENDINGS, ids=lambda v: str(v))
def test_a_failed_or_stopped_run_ends_in_one_line(tmp_path, sets, status, code, fragment):
    result = _run(tmp_path / "run", sets)
    _one_line_ending(result, tmp_path / "run", status, code, fragment)


def _disk_full(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_checkpoint_that_does_not_fit_fails_the_run_instead_of_dropping_its_client(tmp_path, monkeypatch):
    write = clients.client_app.atomic_write

    def full_for_client_1(path, *args, **kwargs):
        if Path(path).name.startswith("client-1."):  # client-1.r<round>.pt (fedkd/checkpoints.py)
            raise _disk_full(path)
        return write(path, *args, **kwargs)

    monkeypatch.setattr(clients.client_app, "atomic_write", full_for_client_1)
    result = _run(tmp_path / "run", [])
    _one_line_ending(result, tmp_path / "run", "failed", 1, "client-1.r1.pt: No space left on device")
    assert load_results(tmp_path / "run")["rounds"] == []  # no round "completed" by 2 of 3 clients


def test_results_that_do_not_fit_fail_the_run_in_one_line(tmp_path, monkeypatch):
    def full(path, record):
        raise _disk_full(path)

    monkeypatch.setattr(fedkd.results, "append_json_line", full)
    result = _run(tmp_path / "run", [])
    _one_line_ending(result, tmp_path / "run", "failed", 1, "rounds.jsonl: No space left on device")


def _unprivileged() -> list[str]:
    """A command prefix under which chmod protects files (root ignores it without these caps)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def _cli(*args: str) -> list[str]:
    return [*_unprivileged(), sys.executable, "-m", "experiments.cli", *args]


def test_a_sweep_into_a_read_only_folder_is_one_line_and_exit_2(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    proc = subprocess.run(
        _cli("sweep", "smoke", "--out", str(folder)), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"fedkd: error: out-dir {str(folder)!r} is not writable (Permission denied); "
        "allowed: a folder you can write to"
    ]


def test_a_checkpoint_folder_that_turns_read_only_fails_the_run(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--rounds", "40", "--out", str(out)]
    proc = subprocess.Popen(
        _cli("run", *args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "rounds.jsonl").exists() or not (out / "rounds.jsonl").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the run never recorded a round"
            time.sleep(0.05)
        (out / "checkpoints").chmod(0o555)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        (out / "checkpoints").chmod(0o755)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    failed = [line for line in stderr.splitlines() if line.startswith("fedkd: run failed:")]
    # whichever write meets the read-only folder first: a client's checkpoint or the server's switch
    assert len(failed) == 1 and "Permission denied" in failed[0]
    assert "checkpoint not written" in failed[0] or "/checkpoints/.current.json" in failed[0]
    saved = json.loads((out / "results.json").read_text())
    assert saved["status"] == "failed" and "Permission denied" in saved["status_reason"]
    assert saved["rounds_done"] < 40


@pytest.mark.slow
def test_a_failed_ray_run_ends_in_one_line_without_flowers_client_tracebacks(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--engine", "ray", "--set", "temperature=1e300", "--out", str(out)]
    command = [sys.executable, "-m", "experiments.cli", "run", *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert len([line for line in proc.stderr.splitlines() if line.startswith("fedkd: run failed:")]) == 1
    assert load_results(out)["status"] == "failed"
