"""`fedkd report` on a sweep folder written by hand (no runs): failed runs counted and named, the
optimiser steps, the matched headline ALMA and the round chosen on validation, --margin."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.run_records import read_runs_csv, run_record, write_runs_csv
from experiments.sweep_report import summary, write_report
from fedkd.config import ExperimentConfig, as_dict

K = 3  # clients
GAIN = {"local": 0.0, "knfu": 0.1, "dsfl": 0.0}  # over local
NOISE = {"local": 0.001, "knfu": 0.0, "dsfl": -0.002}  # x (-1)^seed: dsfl differs by 0.003, knfu by 0


def _round(number: int, alma: float, new_keys: bool, val: float = math.nan) -> dict:
    record = {
        "round": number,
        "evaluated": True,
        "alma": alma,
        "alma_se": 0.02,
        "global_acc": 0.6,
        "self_weight": math.nan,
        "client_acc": {str(p): alma for p in range(K)},
        "weights": np.eye(K).tolist(),
        "participants": list(range(K)),
        "bytes_up": 1000.0,
        "bytes_down": 1000.0,
        "compute_s": 0.5,
        "server_compute_s": 0.0,
        "failed_clients": [],
    }
    if new_keys:
        record |= {
            "private_steps": {str(p): 10 + 2 * p for p in range(K)},  # mean 12
            "transfer_steps": {str(p): 6 for p in range(K)},
            "server_steps": 0,
            "alma_matched": alma + 0.05,
            "alma_matched_se": 0.01,
            "val_alma": val,
        }
    return record


def _write_run(sweep: Path, algorithm: str, seed: int, status: str = "ok", new_keys: bool = True) -> dict:
    cfg = ExperimentConfig().with_overrides(
        {"algorithm": algorithm, "seed": seed, "dataset": "digits", "num-clients": K}
    )
    run_id = f"{algorithm}-{seed}"
    row = {"id": run_id, "axes": {"algorithm": algorithm, "seed": seed}, "config": cfg.to_run_config()}
    if status != "ok":
        return row | {"status": "failed", "error": "RuntimeError: boom"}
    gain = GAIN[algorithm] + NOISE[algorithm] * (-1) ** seed + (0.003 * seed if algorithm == "knfu" else 0.0)
    rounds = [_round(r, 0.5 + gain + 0.1 * r + 0.01 * seed, new_keys, val=0.9) for r in (1, 2)]
    final = {key: rounds[-1][key] for key in ("alma", "alma_se", "global_acc", "self_weight", "round")}
    path = sweep / "runs" / run_id / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"config": as_dict(cfg), "final": final, "rounds": rounds}))
    return row | {"status": "ok", "final": final, "results": f"runs/{run_id}/results.json"}


def _sweep(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path


@pytest.fixture
def warnings(fedkd_messages: list[str]) -> list[str]:
    return fedkd_messages


def test_failed_runs_are_counted_per_cell_and_named_never_dropped(tmp_path, warnings):
    rows = [_write_run(tmp_path, alg, seed) for alg in ("local", "knfu") for seed in (0, 1, 2)]
    rows.append(_write_run(tmp_path, "knfu", 3, status="failed"))
    retried = _write_run(tmp_path, "local", 4, status="failed")  # failed, then retried and finished
    rows += [retried, _write_run(tmp_path, "local", 4)]
    gone = _write_run(tmp_path, "local", 5)
    rows.append(gone)
    (tmp_path / gone["results"]).unlink()  # finished, but its results cannot be read
    report = write_report(_sweep(tmp_path, rows), margin=0.01)

    table = read_runs_csv((tmp_path / "runs.csv").read_text())
    assert sorted((r["algorithm"], r["seed"]) for r in table.records if r["status"] == "failed") == [
        ("knfu", 3),
        ("local", 5),
    ]
    assert len(table.records) == 9  # one per run id: the retried run once, as finished
    with open(tmp_path / "summary.csv") as handle:
        groups = {row["algorithm"]: row for row in csv.DictReader(handle)}
    assert (groups["local"]["n"], groups["local"]["n_failed"]) == ("4", "1")
    assert (groups["knfu"]["n"], groups["knfu"]["n_failed"]) == ("3", "1")
    note = next(m for m in warnings if "failed run(s)" in m)
    assert "2 failed run(s)" in note and "algorithm=knfu/seed=3" in note and "algorithm=local/seed=5" in note
    assert "\n" not in note
    results = (tmp_path / "results.md").read_text()
    assert "| 3/4 (2 failed) |" in results  # the cell's seeds per method, and its failures
    assert "**Warning**: 2 failed run(s)" in report.read_text()


def test_a_run_record_has_steps_matched_alma_and_the_round_chosen_on_validation():
    rounds = [_round(r, 0.5 + 0.1 * r, new_keys=True, val=v) for r, v in ((1, 0.7), (2, 0.9), (3, 0.9))]
    rounds.append({**_round(4, 0.95, new_keys=True, val=0.95), "evaluated": False})  # not evaluated
    rounds[0]["server_steps"] = 30
    final = {"alma": 0.8, "alma_se": 0.02, "global_acc": 0.6, "self_weight": math.nan, "round": 3}
    row = {
        "axes": {"algorithm": "feddf", "seed": 2},
        "config": {},
        "history": {"final": final, "rounds": rounds},
    }
    record = run_record(["algorithm"], row)
    assert record["status"] == "ok" and record["seed"] == 2
    assert (record["private_steps"], record["transfer_steps"], record["client_steps"]) == (12.0, 6.0, 18.0)
    assert record["server_steps"] == pytest.approx(30 / 4)  # per round
    assert record["alma_matched"] == pytest.approx(0.85) and record["alma_matched_se"] == 0.01  # round 3
    assert record["val_round"] == 3.0  # rounds 2 and 3 tie on val_alma: the later one
    assert record["alma_matched_at_val"] == pytest.approx(0.85) and record["global_at_val"] == 0.6
    rounds[1]["val_alma"] = 0.95  # validation peaks at round 2, test ALMA at round 3: val decides
    chosen = run_record(["algorithm"], row)
    assert chosen["val_round"] == 2.0 and chosen["alma_matched_at_val"] == pytest.approx(0.75)
    rounds[0]["pretrain_steps"] = {str(p): 14 for p in range(K)}  # FedMD's first round
    assert run_record(["algorithm"], row)["pretrain_steps"] == 14.0  # per client, once
    for rnd in rounds:
        rnd["val_alma"] = math.nan  # val-fraction = 0: no round chosen on validation
    assert math.isnan(run_record(["algorithm"], row)["val_round"])


def test_old_runs_leave_the_new_columns_blank(tmp_path):
    rows = [_write_run(tmp_path, alg, seed, new_keys=False) for alg in ("local", "knfu") for seed in (0, 1)]
    write_report(_sweep(tmp_path, rows))
    with open(tmp_path / "runs.csv") as handle:
        table = list(csv.DictReader(handle))
    for column in ("alma_matched", "val_round", "private_steps", "client_steps", "server_steps"):
        assert all(row[column] == "" for row in table), column
    assert all(row["status"] == "ok" for row in table)
    results = (tmp_path / "results.md").read_text()
    setting, tables = results.split("\n\n", 1)  # the sweep's setting line, then the old tables
    assert setting.startswith("Setting: ") and tables.startswith("Final ALMA, mean ± 95% CI")
    assert "Optimiser steps" not in results
    assert "no significant difference" in results or "higher" in results  # no margin: the old verdicts
    assert not (tmp_path / "figures" / "alma_vs_steps.png").exists()


def test_the_summary_headline_is_the_matched_alma_with_the_own_split_beside_it(tmp_path):
    rows = [_write_run(tmp_path, alg, seed) for alg in ("local", "knfu") for seed in (0, 1)]
    report = write_report(_sweep(tmp_path, rows), margin=0.01)
    groups = {g["algorithm"]: g for g in summary(read_runs_csv((tmp_path / "runs.csv").read_text()))}
    assert groups["local"]["alma_mean"] == pytest.approx(0.5 + 0.2 + 0.005 + 0.05)  # matched, final
    assert groups["local"]["alma_own"] == pytest.approx(0.5 + 0.2 + 0.005)
    assert groups["local"]["alma_at_val"] == pytest.approx(0.755)  # val ties: the later round, 2
    assert groups["knfu"]["client_steps"] == 18.0 and groups["knfu"]["server_steps"] == 0.0
    text = report.read_text()
    assert "| final ALMA (matched) mean |" in text and "| ALMA (own split) |" in text
    assert "| steps / client·round |" in text and "figures/alma_vs_steps.png" in text
    results = (tmp_path / "results.md").read_text()
    assert "own training label mix" in results and "| 12.0 + 6.0 | 12.0 + 6.0 |" in results
    assert "round chosen on validation" in results and "p equiv (Holm)" in results


def test_runs_csv_round_trip_keeps_failed_rows_and_new_columns():
    row = {"axes": {"algorithm": "knfu", "seed": 1}, "config": {}}
    failed = run_record(["algorithm"], row)
    text = write_runs_csv(read_runs_csv(write_runs_csv(_table_of([failed]))))
    again = read_runs_csv(text).records[0]
    assert again["status"] == "failed" and math.isnan(again["alma"]) and again["seed"] == 1


def _table_of(records: list[dict]):
    from experiments.run_records import RunTable

    return RunTable(["algorithm"], records)


@pytest.mark.parametrize("margin", ["2", "0", "-0.01", "abc", "nan"])
def test_a_bad_margin_is_a_one_line_usage_error(tmp_path, margin):
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--margin", margin])
    assert result.exit_code == 2 and "--margin" in result.output and "allowed" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_command_uses_the_margin(tmp_path):
    rows = [_write_run(tmp_path, alg, seed) for alg in ("local", "knfu", "dsfl") for seed in (0, 1, 2)]
    result = CliRunner().invoke(main, ["report", str(_sweep(tmp_path, rows)), "--margin", "0.05"])
    assert result.exit_code == 0, result.output
    lines = {line.split(" | ")[0]: line for line in result.output.splitlines() if line.startswith("| ")}
    assert lines["| dsfl"].endswith("| equivalent within ±0.05 |")  # 0.003 apart on every seed
    assert lines["| knfu"].endswith("| higher |")
    assert "margin 5 accuracy points" in result.output
