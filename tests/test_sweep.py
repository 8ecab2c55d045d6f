"""Sweeps: grid expansion, crash-safe resume (SIGKILL), failed runs, and the report."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from experiments.cli import main
from experiments.sweep import Sweep, expand, load_sweep, read_rows, repair_table, run_id_of
from fedkd.config import ConfigError, ExperimentConfig
from fedkd.results_files import load_results

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "sweeps" / "smoke.toml"
SMOKE_RUNS = 28  # 2 alphas x 2 seeds x 7 (algorithm, compression) pairs


def test_shipped_sweeps_expand_and_validate():
    sizes = {
        "smoke": SMOKE_RUNS,
        "fkd-family": 120,
        "fkd-family-large": 120,
        "fkd-compression": 130,
        "alpha": 150,
        "knfu-self": 90,
        "knfu-self-mnist": 45,
        "knfu-mnist": 150,
        "knfu-paper": 72,
        "knfu-large": 9,
        "privacy": 30,
    }
    for name, size in sizes.items():
        assert len(expand(load_sweep(ROOT / "experiments" / "sweeps" / f"{name}.toml"))) == size


def test_how_a_run_executes_is_not_part_of_its_identity():
    """Resume finds a run however its clients were executed (engine, workers, their pool)."""
    cfg = ExperimentConfig()
    elsewhere = cfg.with_overrides({"engine": "inprocess", "workers": 2, "worker-pool": "threads"})
    assert run_id_of(elsewhere) == run_id_of(cfg) != run_id_of(cfg.with_overrides({"seed": 1}))


def test_grid_times_zip_and_duplicates_collapse():
    sweep = Sweep("t", {"engine": "inprocess"}, {"seed": [0, 1]}, {"alpha": [0.1, 1.0], "rounds": [2, 3]})
    runs = expand(sweep)
    assert [(r.axes["seed"], r.axes["alpha"], r.axes["rounds"]) for r in runs] == [
        (0, 0.1, 2),
        (0, 1.0, 3),
        (1, 0.1, 2),
        (1, 1.0, 3),
    ]
    same = expand(Sweep("t", {}, {"engine": ["inprocess", "ray"]}, {}))
    assert len(same) == 1  # the engine does not change the numbers, so not the identity


def test_bad_axis_value_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nalpha = [0.5, -1]\n")
    with pytest.raises(ConfigError, match="alpha=-1.0 is invalid"):
        expand(load_sweep(bad))
    bad.write_text("[grid]\nalpha = 0.5\n")
    with pytest.raises(ConfigError, match="must be a non-empty list"):
        load_sweep(bad)


def _rows(out: Path) -> list[dict]:
    return read_rows(out / "runs.jsonl")


def test_sweep_resume_and_report(tmp_path):
    out = tmp_path / "smoke"
    runner = CliRunner()
    first = runner.invoke(main, ["sweep", str(SMOKE), "--out", str(out), "--workers", "2"])
    assert first.exit_code == 0, first.output
    rows = _rows(out)
    assert len(rows) == SMOKE_RUNS and all(r["status"] == "ok" for r in rows)
    assert len({r["id"] for r in rows}) == SMOKE_RUNS
    again = runner.invoke(main, ["sweep", str(SMOKE), "--out", str(out)])
    assert f"{SMOKE_RUNS} already done, 0 to run" in again.output and len(_rows(out)) == SMOKE_RUNS

    report = runner.invoke(main, ["report", str(out)])
    assert report.exit_code == 0, report.output
    text = (out / "report.md").read_text()
    published = (out / "results.md").read_text()
    assert published in text and published in report.output  # the README block, printed too
    # pivot: one row per (alpha, compression), one column per algorithm, local first
    assert "| alpha | compression | seeds | local | feddf | knfu | kt-pfl | selective-fd |" in published
    assert any(line.startswith("| 0.3 | none | 2 |") for line in published.splitlines())
    assert any(line.startswith("| 3 | quant | 2 |") for line in published.splitlines())
    assert any(line.startswith("| 3 | topk | 2 |") for line in published.splitlines())
    for method in ("knfu", "kt-pfl", "feddf", "selective-fd"):  # per-cell paired tests against local
        assert f"| 0.3 | none | {method} |" in published and f"| 3 | none | {method} |" in published
    assert "Holm-adjusted over 8 comparisons" in published  # the quant cells have no local to pair with
    runs_csv = (out / "runs.csv").read_text().splitlines()
    assert runs_csv[0] == (
        "alpha,algorithm,compression,seed,alma,alma_se,global_acc,self_weight,"
        "kb_per_round,client_s_per_round,server_s_per_round,alma_matched,alma_matched_se,"
        "val_round,alma_at_val,alma_matched_at_val,global_at_val,"
        "private_steps,transfer_steps,client_steps,server_steps,pretrain_steps,"
        "train_loss,distill_loss,status"  # then the recorded metrics (fedkd/metric_specs.py)
    )
    assert len(runs_csv) == 1 + SMOKE_RUNS
    _check_costs(out)
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("alpha,algorithm,compression,n,n_failed,alma_mean")
    assert len(csv_lines) == 15
    assert "| kB / round | clients' compute s / round | server compute s / round |" in text
    for name in [
        "alma_per_round",
        "alma_vs_alpha",
        "client_accuracy",
        "bytes_per_round",
        "weights",
        "partition",
        "alma_vs_bytes",
    ]:
        assert f"figures/{name}.png" in text
        with Image.open(out / "figures" / f"{name}.png") as image:
            image.verify()
            assert image.size[0] >= 400 and image.size[1] >= 300
        assert (out / "figures" / f"{name}.pdf").stat().st_size > 1000


def _check_costs(out) -> None:
    """runs.csv's costs are each run's per-round means from its own rounds; FedDF's server
    distillation shows in the server's column, a sparse or quantised upload in the kB."""
    with open(out / "runs.csv") as handle:
        table = list(csv.DictReader(handle))
    assert all(float(row["client_s_per_round"]) > 0 for row in table)

    def costs(algorithm: str, packing: str, key: str) -> list[float]:
        return [float(r[key]) for r in table if (r["algorithm"], r["compression"]) == (algorithm, packing)]

    assert min(costs("feddf", "none", "server_s_per_round")) > 0  # its server distils every round
    for sparse in ("topk", "quant"):
        assert max(costs("knfu", sparse, "kb_per_round")) < min(costs("knfu", "none", "kb_per_round"))
    run = next(r for r in _rows(out) if r["axes"]["algorithm"] == "feddf")
    rounds = load_results(out / run["results"])["rounds"]
    axes = run["axes"]
    key = ("feddf", axes["compression"], axes["seed"], axes["alpha"])
    row = next(
        r for r in table if (r["algorithm"], r["compression"], int(r["seed"]), float(r["alpha"])) == key
    )
    expected = sum(r["bytes_up"] + r["bytes_down"] for r in rounds) / len(rounds) / 1e3
    assert float(row["kb_per_round"]) == pytest.approx(expected)
    server = sum(r["server_compute_s"] for r in rounds) / len(rounds)
    assert float(row["server_s_per_round"]) == pytest.approx(server)


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = tmp_path / "mixed.toml"
    spec.write_text(
        '[base]\nengine = "inprocess"\nnum-clients = 3\nrounds = 1\nlocal-epochs = 1\ndistill-epochs = 1\n'
        f'transfer-size = 60\ndata-dir = "{tmp_path / "empty"}"\n[grid]\ndataset = ["mnist", "digits"]\n'
    )
    result = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = {r["axes"]["dataset"]: r for r in _rows(tmp_path / "out")}
    assert rows["digits"]["status"] == "ok"
    assert rows["mnist"]["status"] == "failed" and "mnist not found" in rows["mnist"]["error"]
    assert "\n" not in rows["mnist"]["error"]


def test_torn_last_line_is_cut_before_appending(tmp_path):
    table = tmp_path / "runs.jsonl"
    table.write_text('{"id": "a", "status": "ok"}\n{"id": "b", "sta')
    assert [r["id"] for r in read_rows(table)] == ["a"]
    repair_table(table)
    assert table.read_text() == '{"id": "a", "status": "ok"}\n'


@pytest.mark.slow
def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_mid_sweep_then_resume_gives_exactly_one_row_per_configuration(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "experiments.cli", "sweep", str(SMOKE), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while len(_rows(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the sweep alone: its workers must not outlive it
        proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "orphaned sweep workers"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, no clean-up
        except ProcessLookupError:
            pass
        proc.wait()
    done_before = len(_rows(out))
    assert 2 <= done_before < SMOKE_RUNS
    with open(out / "runs.jsonl", "a") as handle:  # and a row torn by power loss mid-write
        handle.write('{"id": "torn", "status": "o')
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done_before} already done, {SMOKE_RUNS - done_before} to run" in resumed.stdout
    lines = (out / "runs.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is whole JSON
    assert len(rows) == SMOKE_RUNS and len({r["id"] for r in rows}) == SMOKE_RUNS
    assert all(r["status"] == "ok" for r in rows)


def test_plot_single_run(tmp_path):
    out = tmp_path / "run"
    assert (
        CliRunner()
        .invoke(
            main,
            [
                "run",
                "--engine",
                "inprocess",
                "--num-clients",
                "3",
                "--rounds",
                "2",
                "--set",
                "transfer-size=60",
                "--out",
                str(out),
            ],
        )
        .exit_code
        == 0
    )
    result = CliRunner().invoke(main, ["plot", str(out / "results.json")])
    assert result.exit_code == 0, result.output
    for name in ["accuracy_per_round", "client_accuracy", "weights", "bytes_per_round"]:
        with Image.open(out / f"{name}.png") as image:
            image.verify()
    missing = CliRunner().invoke(main, ["plot", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    history = load_results(out)  # written inline below: the layout before rounds.jsonl
    del history["rounds"][-1]["weights"]  # an older or hand-edited file
    (tmp_path / "partial.json").write_text(json.dumps(history))
    partial = CliRunner().invoke(main, ["plot", str(tmp_path / "partial.json")])
    assert partial.exit_code == 2 and "lacks what the figures need" in partial.output
    (tmp_path / "junk.json").write_text("[1, 2]")
    bad = CliRunner().invoke(main, ["plot", str(tmp_path / "junk.json")])
    assert bad.exit_code == 2 and "is not a fedkd results.json" in bad.output


def test_report_survives_damage_moves_and_runs_of_unequal_length(tmp_path, monkeypatch):
    import logging

    spec = tmp_path / "two.toml"
    spec.write_text(
        '[base]\nengine = "inprocess"\nnum-clients = 3\nrounds = 2\nlocal-epochs = 1\ndistill-epochs = 1\n'
        'transfer-size = 60\n[grid]\nalgorithm = ["local", "knfu"]\nseed = [0, 1]\n'
    )
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["sweep", str(spec), "--out", "sw"]).exit_code == 0
    table = tmp_path / "sw" / "runs.jsonl"
    rows = table.read_text().splitlines()
    assert not json.loads(rows[0])["results"].startswith("/")  # stored relative to the sweep folder
    table.write_text("\n".join([rows[0], "{torn", "[1, 2]", *rows[1:]]) + "\n")
    short = (tmp_path / "sw" / json.loads(rows[1])["results"]).parent / "rounds.jsonl"
    short.write_text(short.read_text().splitlines(keepends=True)[0])  # as if stopped early (max-epsilon)
    (tmp_path / "sw" / json.loads(rows[2])["results"]).unlink()  # a results file gone missing

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("flwr.fedkd").addHandler(handler)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    try:
        result = CliRunner().invoke(main, ["report", str(tmp_path / "sw")])
    finally:
        logging.getLogger("flwr.fedkd").removeHandler(handler)
    assert result.exit_code == 0, result.output
    assert any("damaged line(s) 2, 3" in m for m in seen)
    assert any("cannot read" in m for m in seen)
    runs_csv = (tmp_path / "sw" / "runs.csv").read_text().splitlines()
    assert len(runs_csv) == 1 + 4  # 3 readable runs and the unreadable one, counted as failed
    assert sum(line.endswith(",failed") for line in runs_csv) == 1
    assert any("1 failed run(s)" in m for m in seen)


@pytest.mark.parametrize("body", ["base = 5\n", "grid = 5\n", "zip = [1, 2]\n"])
def test_a_sweep_file_with_a_non_table_section_is_one_line_error(tmp_path, body):
    spec = tmp_path / "bad.toml"
    spec.write_text(body)
    result = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "must be a [" in result.output and "Traceback" not in result.output
