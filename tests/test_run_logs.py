"""--log csv and --log tensorboard: read back, every logged value equals results.json's."""

from __future__ import annotations

import csv
import math

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from experiments.cli import main
from experiments.engines import run_experiment
from fedkd.metric_specs import recorded_names
from fedkd.results_files import load_results
from fedkd.run_logs import client_columns, round_columns
from fedkd.tensorboard_log import EPSILON_TAG, TENSORBOARD_DIR, WEIGHTS_TAG, scalars
from tests.conftest import tiny_config

COUNTED = {"participants", "failed_clients", "rolled_back"}  # rounds.csv counts these lists


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """3 rounds, evaluated every 2nd (round 1 has no accuracy), noise on (epsilon per client)."""
    out = tmp_path_factory.mktemp("logged")
    cfg = tiny_config(
        rounds=3,
        mechanism="gaussian",
        **{"eval-every": 2, "log": "csv,tensorboard", "out-dir": str(out), "noise-multiplier": 5.0},
    )
    run_experiment(cfg)
    return out, load_results(out)


def _value(text: str) -> float | None:
    return None if text == "" else float(text)


def _same(cell: str, value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return cell == ""
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    return _value(cell) == pytest.approx(value, rel=1e-11)  # floats to 12 significant digits


def test_csv_rows_equal_the_results(logged_run):
    out, saved = logged_run
    with open(out / "rounds.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["round"] for r in rows] == ["1", "2", "3"] and list(rows[0]) == list(round_columns())
    for row, record in zip(rows, saved["rounds"], strict=True):
        for column in round_columns():
            if column in COUNTED:
                assert int(row[column]) == len(record[column]), column
            elif column == "epsilon_max":
                assert _value(row[column]) == pytest.approx(max(record["epsilon"].values()), rel=1e-11)
            else:
                assert _same(row[column], record[column]), (column, row[column], record[column])
    assert rows[0]["alma"] == "" and rows[1]["alma"] != ""  # round 1 was not evaluated
    with open(out / "clients.csv") as handle:
        clients = list(csv.DictReader(handle))
    assert len(clients) == 3 * 3 and list(clients[0]) == list(client_columns())
    for row in clients:
        record = saved["rounds"][int(row["round"]) - 1]
        pid = row["partition_id"]
        assert _same(row["local_acc"], record["client_acc"].get(pid))
        assert _same(row["private_samples"], record["private_samples"][pid])
        assert _value(row["epsilon"]) == pytest.approx(record["epsilon"][pid], rel=1e-11)
        assert _same(row["global_acc"], record["client_global_acc"].get(pid))
        assert row["architecture"] == ["mlp", "cnn-s", "lenet5"][int(pid)]
        for name in recorded_names():  # every recorded metric (fedkd/metric_specs.py), per client
            assert _same(row[name], record[f"client_{name}"].get(pid)), name
    assert {"train_loss", "distill_loss"} <= set(recorded_names())
    assert all(r["client_train_loss"] and r["train_loss"] > 0 for r in saved["rounds"])


def test_tensorboard_scalars_and_weights_image_equal_the_results(logged_run):
    out, saved = logged_run
    events = EventAccumulator(str(out / TENSORBOARD_DIR), size_guidance={SCALARS: 0, IMAGES: 0})
    events.Reload()
    for tag, key in scalars().items():
        logged = {e.step: e.value for e in events.Scalars(tag)}
        expected = {r["round"]: r[key] for r in saved["rounds"] if r[key] is not None}
        assert logged.keys() == expected.keys(), tag  # a round without the value logs nothing
        for step, value in expected.items():
            assert logged[step] == pytest.approx(value, rel=1e-6), tag  # TensorBoard keeps float32
    assert 1 not in {e.step for e in events.Scalars("accuracy/alma")}  # not evaluated
    epsilon = {e.step: e.value for e in events.Scalars(EPSILON_TAG)}
    assert epsilon == pytest.approx({r["round"]: max(r["epsilon"].values()) for r in saved["rounds"]})
    images = events.Images(WEIGHTS_TAG)
    assert [i.step for i in images] == [1, 2, 3] and images[0].width == images[0].height >= 3


def test_no_log_writes_no_log_files_and_a_bad_log_value_is_one_line(tmp_path):
    run_experiment(tiny_config(rounds=1, **{"out-dir": str(tmp_path)}))
    assert not (tmp_path / "rounds.csv").exists() and not (tmp_path / TENSORBOARD_DIR).exists()
    result = CliRunner().invoke(main, ["run", "--log", "xml", "--dry-run"])
    assert result.exit_code == 2 and "log='xml' is invalid; allowed: none, or a comma list" in result.output
