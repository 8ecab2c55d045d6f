"""One spec per client metric (fedkd/metric_specs.py): registering one is the whole change. A spec
added here appears in rounds.jsonl, rounds.csv, clients.csv, TensorBoard, final, runs.csv and the
sweep report; the server refuses values outside its range; a name clash is one line."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from experiments.cli import main
from fedkd.errors import ConfigError
from fedkd.metric_specs import ACCURACY, METRICS, MetricSpec, metric, metric_specs, recorded_names
from fedkd.protocol import ProtocolError, checked_metrics, unprotected
from tests.cli_processes import tiny_sweep


def confidence(model: torch.nn.Module, data) -> float:
    """Mean top-class probability on the client's local test split."""
    return float(torch.softmax(model(data.test_x), dim=1).max(dim=1).values.mean())


REVEALS = "mean confidence on the local test split"
SPEC = MetricSpec("test-confidence", ACCURACY, REVEALS, record="confidence", compute=confidence)


@pytest.fixture
def with_spec(monkeypatch):
    """SPEC registered for one test (the registry restored afterwards)."""
    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))
    metric(SPEC)
    return SPEC


def test_a_registered_metric_appears_in_every_output(tmp_path, with_spec):
    sweep = tmp_path / "s.toml"
    keys = {"rounds": 2, "log": "csv,tensorboard", "worker-pool": "threads"}
    sweep.write_text(tiny_sweep("m", "seed = [0, 1]", **keys))
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", str(sweep), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    run = sorted((out / "runs").iterdir())[0]
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    for record in rounds:  # per client, and their mean
        per_client = record["client_confidence"]
        assert sorted(per_client) == ["0", "1", "2"] and all(0 < v <= 1 for v in per_client.values())
        assert record["confidence"] == pytest.approx(sum(per_client.values()) / 3)
    final = json.loads((run / "results.json").read_text())["final"]
    assert final["confidence"] == rounds[-1]["confidence"]
    with open(run / "rounds.csv") as handle:
        assert [float(r["confidence"]) for r in csv.DictReader(handle)] == pytest.approx(
            [r["confidence"] for r in rounds]
        )
    with open(run / "clients.csv") as handle:
        clients = list(csv.DictReader(handle))
    assert [float(r["confidence"]) for r in clients] == pytest.approx(
        [rounds[int(r["round"]) - 1]["client_confidence"][r["partition_id"]] for r in clients]
    )
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={SCALARS: 0})
    events.Reload()
    logged = [e.value for e in events.Scalars("clients/confidence")]
    assert logged == pytest.approx([r["confidence"] for r in rounds], rel=1e-6)

    report = CliRunner().invoke(main, ["report", str(out)])
    assert report.exit_code == 0, report.output
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 2 and all(0 < float(r["confidence"]) <= 1 for r in runs)
    lines = (out / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("|") and "| seeds |" in line)
    assert header.endswith("| confidence |"), header
    assert unprotected()["test-confidence"] == SPEC.reveals  # declared in the privacy record


def test_values_outside_a_specs_range_are_refused(with_spec):
    assert checked_metrics({"test-confidence": 0.5}) == {"test-confidence": 0.5}
    for bad in (1.5, -0.1, float("nan"), "high", True):
        with pytest.raises(ProtocolError, match="test-confidence"):
            checked_metrics({"test-confidence": bad})


def test_every_spec_is_well_formed():
    """Iterates the registry: keys on the wire, records named as columns, ranges ordered."""
    specs = metric_specs()
    assert len({s.key for s in specs}) == len(specs)
    assert len(set(recorded_names())) == len(recorded_names())
    for spec in specs:
        assert spec.key == spec.key.lower() and " " not in spec.key, spec.key
        assert spec.range[0] <= spec.range[1] and spec.reveals, spec.key
        assert not spec.record or spec.record.isidentifier(), spec.key
    assert {"train_loss", "distill_loss"} <= set(recorded_names())


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("alma", "the round record"),
        ("total_wall_s", "results.json's final"),
        ("epsilon_max", "rounds.csv"),
        ("partition_id", "clients.csv"),
    ],
)
def test_a_metric_recorded_under_a_name_fedkd_uses_is_refused_before_round_1(monkeypatch, name, where):
    from fedkd.validation import validate_config
    from tests.conftest import tiny_config

    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))
    metric(MetricSpec("clash", ACCURACY, "nothing", record=name, compute=lambda model, data: 0.5))
    with pytest.raises(ConfigError, match=f"metric record name '{name}' is a field of {where} already"):
        validate_config(tiny_config(rounds=1))


def test_a_metric_named_like_a_runs_csv_column_is_refused_when_the_table_is_written(with_spec):
    from experiments.run_records import RunTable, write_runs_csv

    assert "confidence" in write_runs_csv(RunTable(["alpha"], [])).splitlines()[0].split(",")
    with pytest.raises(ConfigError, match="metric record name 'confidence' is a field of runs.csv already"):
        write_runs_csv(RunTable(["confidence"], []))  # an axis of the sweep with the same name


def test_a_client_reports_only_finite_metrics(monkeypatch):
    """A diverged model's loss is not a number: the client leaves it out, its reply stands."""
    from experiments.engines import run_inprocess
    from fedkd.client_steps import reported
    from tests.conftest import tiny_config

    assert reported({"a": 1.0, "b": float("nan"), "c": float("inf"), "d": -1e-7}) == {"a": 1.0, "d": -1e-7}
    cfg = tiny_config(rounds=1, algorithm="local", **{"learning-rate": 1e12})
    record = run_inprocess(cfg).rounds[0]
    assert record["failed_clients"] == [] and len(record["client_acc"]) == 3
    assert len(record["client_train_loss"]) < 3  # a diverged client's loss: not reported, not recorded


def test_a_slightly_negative_loss_is_accepted():
    """KL of a student that matches its target rounds to about -1e-7: a loss is any finite number."""
    assert checked_metrics({"distill-loss": -4.96e-08, "train-loss": 0.0}) == {
        "distill-loss": -4.96e-08,
        "train-loss": 0.0,
    }
