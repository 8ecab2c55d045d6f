"""A real Ray cluster on loopback (`ray start --head`, stopped by this test): a 2-run MNIST sweep
as Ray tasks and a 2-round simulation that joins the cluster through ray-address (slow, in CI).

The head starts without FEDKD_DATA_DIR, as a cluster's nodes would: the sweep must hand its data
folder to the tasks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.cli import main
from fedkd.results_files import load_results
from tests.test_deployment import _free_port, _stop_group, _wait_port

BIN = Path(sys.executable).parent
SWEEP = """
name = "ray-cluster"
[base]
dataset = "mnist"
engine = "inprocess"
num-clients = 3
partitioner = "iid"
rounds = 2
local-epochs = 1
distill-epochs = 1
transfer-size = 60
[grid]
algorithm = ["local", "knfu"]
"""


@pytest.fixture
def ray_head(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDKD_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--temp-dir={temp}",
    ]
    with open(tmp_path / "ray-head.log", "w") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, timeout=120)
        assert head.poll() is None, (tmp_path / "ray-head.log").read_text()[-2000:]
        yield f"127.0.0.1:{port}", temp
    finally:
        _stop_group(head)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_sweep_tasks_and_a_simulation_run_on_an_existing_ray_cluster(
    ray_head, tmp_path, monkeypatch, shared_data
):
    ray_head, session = ray_head
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("FEDKD_DATA_DIR", str(shared_data))
    sweep_file = tmp_path / "ray-cluster.toml"
    sweep_file.write_text(SWEEP)
    out = tmp_path / "sweep"
    args = ["sweep", str(sweep_file), "--out", str(out), "--executor", "ray", "--ray-address", ray_head]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["axes"]["algorithm"] for r in rows) == ["knfu", "local"]
    assert all(r["status"] == "ok" and 0 < r["final"]["alma"] <= 1 for r in rows), rows
    again = CliRunner().invoke(main, args)  # resume: nothing left to run
    assert again.exit_code == 0 and "2 already done, 0 to run" in again.output

    run_out = tmp_path / "run"
    settings = ["--set", f"ray-address={ray_head}", "--set", "rounds=2", "--set", "num-clients=3"]
    settings += ["--set", "transfer-size=60"]
    ran = CliRunner().invoke(main, ["run", "--engine", "ray", *settings, "--out", str(run_out)])
    assert ran.exit_code == 0, ran.output
    saved = load_results(run_out)
    assert saved["status"] == "completed" and len(saved["rounds"]) == 2
    # the same numbers as the in-process engine: joining a cluster changes where, not what
    local = CliRunner().invoke(
        main, ["run", "--engine", "inprocess", *settings[2:], "--out", str(tmp_path / "local")]
    )
    assert local.exit_code == 0, local.output
    reference = load_results(tmp_path / "local")
    assert [r["alma"] for r in saved["rounds"]] == [r["alma"] for r in reference["rounds"]]
    # both drivers (the sweep, the simulation) joined the head's session instead of starting a Ray
    drivers = list(session.glob("session_*/logs/python-core-driver-*"))
    assert len(drivers) >= 2, sorted(p.name for p in session.glob("session_*/logs/*"))
