import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from fedkd.config import ConfigError, ExperimentConfig
from fedkd.config_files import load_config_file
from fedkd.validation import validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_defaults_equal_flattened_dataclass_defaults():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == ExperimentConfig().to_run_config()


def test_run_config_round_trip_is_identity():
    cfg = ExperimentConfig().with_overrides({"alpha": 0.1, "algorithm": "fedmd", "include-self": False})
    assert ExperimentConfig.from_run_config(cfg.to_run_config()) == cfg


def test_overrides_coerce_text_values_to_field_types():
    cfg = ExperimentConfig().with_overrides({"num-clients": "7", "alpha": "0.25", "include-self": "false"})
    assert cfg.data.num_clients == 7 and cfg.data.alpha == 0.25 and cfg.fusion.include_self is False


def test_underscore_keys_are_accepted_as_kebab():
    assert ExperimentConfig().with_overrides({"num_clients": 4}).data.num_clients == 4


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (
            {"dataset": "imagenet"},
            "unknown dataset 'imagenet'; allowed: cifar10, digits, fashion-mnist, mnist",
        ),
        (
            {"algorithm": "magic"},
            "unknown algorithm 'magic'; allowed: dsfl, fd, fedavg, feddf, fedmd, fedmd-nopretrain, "
            "fedproto, knfu, knfu-guard, kt-pfl, local, selective-fd",
        ),
        ({"models": "mlp,transformer"}, "unknown model 'transformer'"),
        ({"alpha": 0}, "alpha=0.0 is invalid; allowed: > 0"),
        ({"alpha": -1.5}, "alpha=-1.5"),
        ({"num-clients": 1}, "num-clients=1 is invalid; allowed: >= 2 (and what the data allows)"),
        ({"rounds": 0}, "rounds=0 is invalid; allowed: >= 1"),
        ({"engine": "spark"}, "unknown engine 'spark'; allowed: ray, inprocess"),
        ({"divergence": "l2"}, "unknown divergence 'l2'"),
        ({"neighbour-rule": "knn"}, "unknown neighbour-rule 'knn'"),
        ({"models": "mlp,mlp,mlp", "num-clients": 2}, "3 architectures for 2 clients"),
        (
            {"algorithm": "fedavg"},
            "needs one architecture for all clients; models='mlp,cnn-s,lenet5' lists 3",
        ),
        ({"dsfl-temperature": 0}, "dsfl-temperature=0.0 is invalid; allowed: > 0"),
        ({"guard-fraction": 1.0}, "guard-fraction=1.0 is invalid; allowed: 0 < value < 1"),
        ({"beta": "inf"}, "beta=inf is invalid; allowed: a finite number"),
        ({"temperature": float("inf")}, "temperature=inf is invalid; allowed: a finite number"),
        ({"learning-rate": "nan"}, "learning-rate=nan is invalid; allowed: a finite number"),
        ({"min-local-test-size": 0}, "min-local-test-size=0 is invalid; allowed: >= 1"),
        ({"eval-every": 0}, "eval-every=0 is invalid; allowed: >= 1"),
        ({"fedmd-subset": 500}, "fedmd-subset=500; allowed: 0 (all) .. transfer-size (200)"),
        ({"pretrain-epochs": -1}, "pretrain-epochs=-1 is invalid; allowed: >= 0"),
        ({"client-threads": 100000}, "client-threads=100000 is invalid; allowed: 1 <= value <= 256"),
        ({"ktpfl-step-size": 0}, "ktpfl-step-size=0.0 is invalid; allowed: > 0"),
        ({"ktpfl-step-rule": "newton"}, "unknown ktpfl-step-rule 'newton'; allowed: adaptive, fixed"),
        ({"ktpfl-simplex": "clip"}, "unknown ktpfl-simplex 'clip'; allowed: softmax, projection"),
        ({"fedmd-pretrain-epochs": -1}, "fedmd-pretrain-epochs=-1 is invalid; allowed: >= 0"),
        ({"selective-kernel-width": 0}, "selective-kernel-width=0.0 is invalid; allowed: > 0"),
        ({"ktpfl-rho": -1}, "ktpfl-rho=-1.0 is invalid; allowed: >= 0"),
        ({"feddf-server-steps": -1}, "feddf-server-steps=-1 is invalid; allowed: >= 0"),
        ({"selective-quantile": 0}, "selective-quantile=0.0 is invalid; allowed: 0 < value <= 1"),
        ({"compression": "zip"}, "unknown compression 'zip'; allowed: none, topk, quant"),
    ],
)
def test_bad_values_raise_one_line_config_errors(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        validate_config(ExperimentConfig().with_overrides(overrides))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"colour": "red"}, "unknown config key 'colour'"),
        ({"num-clients": "ten"}, "num-clients='ten' is not a valid int"),
        ({"include-self": "maybe"}, "include-self='maybe' is not a boolean"),
        ({"rounds": 2.5}, "rounds=2.5 is not an integer"),
    ],
)
def test_bad_keys_and_types_raise(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ExperimentConfig().with_overrides(overrides)


def test_config_file_flat_and_config_table(tmp_path):
    flat = tmp_path / "a.toml"
    flat.write_text('alpha = 0.1\nalgorithm = "fedmd"\n')
    table = tmp_path / "b.toml"
    table.write_text("[config]\nrounds = 4\n")
    assert load_config_file(flat) == {"alpha": 0.1, "algorithm": "fedmd"}
    assert load_config_file(table) == {"rounds": 4}


def test_malformed_config_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("alpha = = 3\n")
    with pytest.raises(ConfigError, match="bad.toml.*is not valid TOML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    nested = tmp_path / "nested.toml"
    nested.write_text("[data]\nalpha = 1\n")
    with pytest.raises(ConfigError, match="nested table 'data'"):
        load_config_file(nested)


def test_config_file_mixing_top_level_keys_and_a_config_table_is_one_line_error(tmp_path):
    mixed = tmp_path / "mixed.toml"
    mixed.write_text("alpha = 0.1\n\n[config]\nrounds = 4\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(mixed)
    message = str(err.value)
    assert "mixes top-level keys ('alpha') with a [config] table" in message and "\n" not in message


def test_results_json_is_a_config_file_new_and_old_layouts(tmp_path):
    cfg = ExperimentConfig().with_overrides({"alpha": 0.3, "algorithm": "dsfl", "out-dir": "/x/run"})
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"config": {"data": {"alpha": 9.0}}, "run_config": cfg.to_run_config()}))
    old = tmp_path / "old.json"  # before run_config was stored: only the nested config
    old.write_text(json.dumps({"config": dataclasses.asdict(cfg)}))
    for path in (new, old):
        loaded = ExperimentConfig().with_overrides(load_config_file(path))
        assert loaded == cfg.with_overrides({"out-dir": ""})  # out-dir dropped: a repeat lands anew
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="is not a fedkd results.json"):
        load_config_file(junk)
