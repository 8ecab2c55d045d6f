"""Any value for any key, from a TOML file, a results.json or --set, is accepted or refused in one
line with exit code 2 by `fedkd run --dry-run`, never a traceback (keys from the key registry)."""

import datetime
import json
import math
import re

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from experiments.cli import main
from fedkd.config import (
    BUDGET_MATCHES,
    ENGINES,
    LOGS,
    NEIGHBOUR_RULES,
    WORKER_POOLS,
    ExperimentConfig,
    config_keys,
    key_ranges,
)
from fedkd.data.partition import PARTITIONERS
from fedkd.data.sources import DATASETS
from fedkd.errors import ConfigError
from fedkd.fusion import FUSIONS
from fedkd.models import MODELS
from fedkd.validation import validate_config

DEFAULTS = ExperimentConfig().to_run_config()
KEYS = config_keys()
# Words some string key takes, so that drawn configs also pass and reach the data split.
WORDS = sorted(
    {*DATASETS.names(), *PARTITIONERS.names(), *FUSIONS.names(), *MODELS.names(), *ENGINES, *LOGS}
    | {*NEIGHBOUR_RULES, *WORKER_POOLS, *BUDGET_MATCHES, "gaussian", "laplace", "cpu", "topk", "quant"}
)


def _near(default):
    """Values close to what the key takes: the edges where range checks live."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(
            st.integers(-3, 1100),
            st.sampled_from([2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**30]),
        )
    if isinstance(default, float):
        return st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e10, 1e300, 1.5, 0.999999]),
        )
    return st.one_of(st.sampled_from(WORDS), st.text(st.characters(codec="utf-8"), max_size=12))


ANY_VALUE = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.dates(),
    st.datetimes(),
    st.times(),
    st.lists(st.integers(0, 5), max_size=3),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
)


@st.composite
def key_values(draw):
    key = draw(st.sampled_from(KEYS))
    value = draw(st.one_of(_near(DEFAULTS[key]), _near(DEFAULTS[key]), ANY_VALUE))
    return key, value


def _assert_one_line_or_success(result):
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"traceback: {result.exception!r}"
    )
    assert result.exit_code in (0, 2), result.output
    event(f"exit {result.exit_code}")
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fedkd: error: "), result.stderr


def _dry_run(*args):
    return CliRunner().invoke(main, ["run", "--dry-run", *args])


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@example(pairs=[("num-clients", datetime.date(1979, 5, 27))], as_json=False, spelling=False)
@example(pairs=[("rounds", None)], as_json=True, spelling=False)
@given(pairs=st.lists(key_values(), min_size=1, max_size=3), as_json=st.booleans(), spelling=st.booleans())
def test_any_values_in_a_config_file_are_accepted_or_one_line(tmp_path_factory, pairs, as_json, spelling):
    table = {(key.replace("-", "_") if spelling else key): value for key, value in pairs}
    folder = tmp_path_factory.mktemp("cfg")
    if as_json:
        path = folder / "results.json"
        path.write_text(json.dumps({"run_config": table}, default=str))
    else:
        path = folder / "config.toml"
        path.write_text(tomli_w.dumps(table))
    _assert_one_line_or_success(_dry_run("--config", str(path)))


@FUZZ
@example(key="seed", text="-1")  # numpy's seeding refused it with a traceback
@given(key=st.sampled_from(KEYS), text=st.text(st.characters(codec="utf-8"), max_size=16))
def test_any_set_value_is_accepted_or_one_line(key, text):
    _assert_one_line_or_success(_dry_run("--set", f"{key}={text}"))


@FUZZ
@example(kv=("seed", -1))
@given(kv=key_values())
def test_any_near_value_as_set_text_is_accepted_or_one_line(kv):
    key, value = kv
    text = repr(value) if isinstance(value, float) and not math.isfinite(value) else str(value)
    _assert_one_line_or_success(_dry_run("--set", f"{key}={text}"))


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("num-clients = 1979-05-27", "num-clients=datetime.date(1979, 5, 27) is not an integer"),
        ("rounds = [1, 2]", "rounds=[1, 2] is not an integer"),
        ("alpha = '0.5'", "alpha='0.5' is not a number"),
        ("rounds = 12:00:00", "rounds=datetime.time(12, 0) is not an integer"),
        ("num_clients = 4\nnum-clients = 5", "num-clients is given twice (num_clients, num-clients)"),
    ],
)
def test_toml_types_and_duplicate_spellings_are_refused(tmp_path, toml, fragment):
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    result = _dry_run("--config", str(path))
    assert result.exit_code == 2 and fragment in result.stderr, result.stderr


def test_json_null_for_a_number_is_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"run_config": {"rounds": None}}))
    result = _dry_run("--config", str(path))
    assert result.exit_code == 2 and "rounds=None is not an integer" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--set", "reply-timeout=1e10"],
            "reply-timeout=10000000000.0 is invalid; allowed: 0 <= value <= 9.22337e+09 (0: wait",
        ),
        (
            ["--set", "min-nodes-wait=1e300"],
            "min-nodes-wait=1e+300 is invalid; allowed: 0 < value <= 9.22337e+09",
        ),
        (["--num-clients", "4", "--set", "workers=64"], "workers=64 is invalid; allowed: 0..num-clients (4)"),
        (["--set", "partitioner=shard", "--set", "shards-per-client=1000"], "shards-per-client=1000"),
        (["--set", "transfer-size=1000000"], "transfer-size=1000000 leaves too little of the 1437 digits"),
        (["--set", "partitioner=quantity-lognormal", "--set", "quantity-sigma=1000"], "quantity-sigma=1000"),
        (["--set", "noise-multiplier=1e-300"], "noise-multiplier=1e-300 is invalid; allowed: >="),
        (
            ["--set", "mechanism=gaussian", "--set", "clip=1e308"],
            "mechanism=gaussian with noise-multiplier=1",
        ),
        (
            [
                "--set",
                "mechanism=gaussian",
                "--set",
                "calibrate-from=target-epsilon",
                "--set",
                "target-epsilon=1e300",
            ],
            "target-epsilon=1e+300, clip=1, delta=1e-05 leaves no finite epsilon",
        ),
        (["--set", "client-gpus=0.00001"], "client-gpus=1e-05 is invalid; allowed: 0, or >= 0.0001"),
        (["--out", "runs/a\nb"], "out-dir="),
        (["--set", "data-dir=/tmp/\x1b[31m"], "data-dir="),
    ],
)
def test_values_beyond_what_the_os_a_library_or_the_data_allows_are_refused(args, fragment):
    result = _dry_run(*args)
    assert result.exit_code == 2 and fragment in result.stderr, result.stderr


@pytest.mark.parametrize("name", [["a", "b"], 3, "", "a/b", "x\ny", True])
def test_a_sweep_name_that_is_not_a_folder_name_is_refused(tmp_path, name):
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps({"name": name, "base": {"rounds": 0}}))  # runs nothing either way
    result = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"name={name!r} is invalid; allowed: a string" in result.stderr, (
        result.output
    )
    assert not (tmp_path / "out").exists()


NUMERIC = [key for key in KEYS if type(DEFAULTS[key]) in (int, float)]


def test_every_numeric_key_declares_its_range_on_its_field():
    assert NUMERIC and set(NUMERIC) <= set(key_ranges())


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(NUMERIC), data=st.data())
def test_a_value_outside_a_keys_declared_range_is_refused_in_its_words(key, data):
    rule = key_ranges()[key]
    number = st.integers(-(10**12), 10**12) if isinstance(DEFAULTS[key], int) else st.floats(-1e12, 1e12)
    value = data.draw(st.one_of(number, st.sampled_from([bound for _, bound in rule.bounds()])))
    value = int(value) if isinstance(DEFAULTS[key], int) else float(value)
    cfg = ExperimentConfig().with_overrides({key: value})
    if rule.admits(value):
        return
    with pytest.raises(
        ConfigError,
        match=f"^{key}={re.escape(str(value))} is invalid; allowed: {re.escape(rule.describe())}$",
    ):
        validate_config(cfg)


def test_a_control_character_in_a_sweep_out_folder_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps({"name": "s", "base": {"rounds": 0}}))  # runs nothing either way
    result = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "a\nb")])
    assert result.exit_code == 2 and "is invalid; allowed: text without control characters" in result.stderr
    assert list(tmp_path.iterdir()) == [path]
