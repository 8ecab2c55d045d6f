"""Whole runs: the in-process engine and the Ray Simulation Engine agree, and runs are reproducible."""

import json

import pytest
from flwr.app import Message

from clients.client_app import make_client_app
from experiments.engines import run_experiment, run_inprocess
from fedkd.metric_specs import recorded_names
from fedkd.results import ROUND_FIELDS
from fedkd.results_files import load_results
from server.inprocess.grid import InProcessGrid
from tests.conftest import tiny_config


def _numbers(results):
    return [
        (r["alma"], r["alma_matched"], r["val_alma"], r["global_acc"], r["client_acc"], r["weights"])
        for r in results.rounds
    ]


@pytest.mark.parametrize("algorithm", ["knfu", "knfu-guard", "fedmd", "dsfl", "local"])
def test_inprocess_run_writes_results_and_is_reproducible(tmp_path, algorithm):
    cfg = tiny_config(algorithm=algorithm, **{"out-dir": str(tmp_path)})
    first = run_experiment(cfg)
    second = run_experiment(cfg)
    assert _numbers(first) == _numbers(second)
    assert set(json.loads((tmp_path / "results.json").read_text())) == {
        "config",
        "run_config",
        "environment",
        "status",
        "weights_axes",
        "budget",
        "rounds_file",  # the rounds are in rounds.jsonl beside it, one line each
        "rounds_done",
        "hello_failed_clients",  # refused hello replies (none here)
        "final",
    }
    saved = load_results(tmp_path)
    assert saved["run_config"] == cfg.to_run_config()  # flat kebab-case, beside the nested config
    assert saved["status"] == "completed"
    assert saved["environment"]["cuda_available"] in (True, False) and saved["final"]["total_wall_s"] > 0
    assert saved["config"]["fusion"]["algorithm"] == algorithm
    assert len(saved["rounds"]) == cfg.run.rounds
    recorded = {key for name in recorded_names() for key in (name, f"client_{name}")}
    assert set(saved["rounds"][0]) == set(ROUND_FIELDS) | recorded  # the metric specs' fields besides fedkd's
    assert saved["final"]["alma"] == pytest.approx(first.rounds[-1]["alma"])
    assert 0.0 < saved["final"]["alma"] <= 1.0
    k = cfg.data.num_clients
    assert len(saved["rounds"][0]["weights"]) == k and len(saved["rounds"][0]["client_acc"]) == k
    if algorithm == "local":
        assert saved["rounds"][0]["bytes_up"] == 0
    else:
        assert saved["rounds"][0]["bytes_up"] > 0


def test_different_seeds_give_different_runs():
    assert _numbers(run_experiment(tiny_config(seed=1))) != _numbers(run_experiment(tiny_config(seed=2)))


def test_a_client_crashing_mid_run_does_not_stop_the_federation():
    cfg = tiny_config(rounds=3)
    real = make_client_app(cfg)
    calls = {"n": 0}

    def flaky(message: Message, context):
        if context.node_config["partition-id"] == 1 and message.metadata.group_id == "2":
            raise RuntimeError("out of memory")
        calls["n"] += 1
        return real(message, context)

    results = run_inprocess(cfg, client_app=flaky)
    dropped = [r["failed_clients"] for r in results.rounds]
    assert dropped[0] == [] and dropped[2] == []
    assert dropped[1][0]["partition_id"] == 1 and "out of memory" in dropped[1][0]["reason"]
    assert 1 not in results.rounds[1]["client_acc"] and 1 in results.rounds[2]["client_acc"]


def test_inprocess_grid_node_ids_are_not_partition_ids():
    grid = InProcessGrid(make_client_app(tiny_config()), 3)
    ids = sorted(grid.get_node_ids())
    pids = [grid.context(i).node_config["partition-id"] for i in ids]
    assert ids != [0, 1, 2] and sorted(pids) == [0, 1, 2]


@pytest.mark.slow
def test_ray_simulation_gives_the_same_numbers_as_the_inprocess_engine(tmp_path):
    cfg = tiny_config(**{"num-clients": 3, "rounds": 2})
    inprocess = run_experiment(cfg)
    ray = run_experiment(cfg.with_overrides({"engine": "ray", "out-dir": str(tmp_path)}))
    assert _numbers(ray) == _numbers(inprocess)
    assert json.loads((tmp_path / "results.json").read_text())["final"]["alma"] == pytest.approx(
        inprocess.rounds[-1]["alma"]
    )


@pytest.mark.slow
def test_ctrl_c_ends_a_ray_run_within_seconds_and_marks_it_interrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "experiments.cli", "run", "--engine", "ray", "--num-clients", "3",
           "--rounds", "500", "--set", "local-epochs=1", "--out", str(out)]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if load_results(out / "results.json")["rounds"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        start = time.monotonic()
        code = proc.wait(timeout=60)
        assert code == 130 and time.monotonic() - start < 30
        saved = load_results(out / "results.json")
        assert saved["status"] == "interrupted" and saved["rounds"]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray workers, if any were left
        except ProcessLookupError:
            pass
        proc.wait()
