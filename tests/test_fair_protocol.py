"""The fair protocol's measurements: label-mix-matched test samples (the headline ALMA), the
validation split, and the self-distillation control."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.engines import run_experiment
from fedkd.client_steps import training_data
from fedkd.config import FusionConfig
from fedkd.data.federation import matched_sample
from fedkd.fusion import FUSIONS
from tests.conftest import tiny_config


@settings(max_examples=60, deadline=None)
@given(
    train=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    per_class=st.integers(0, 30),
    size=st.integers(0, 80),
    seed=st.integers(0, 2**31 - 1),
)
def test_matched_sample_follows_the_training_label_mix(train, per_class, size, seed):
    train_labels = np.array(train, dtype=np.int64)
    test_labels = np.repeat(np.arange(5), per_class)  # (5 * per_class,)
    picked = matched_sample(train_labels, test_labels, size, 5, np.random.default_rng(seed))
    assert len(np.unique(picked)) == len(picked)  # without replacement
    got = np.bincount(test_labels[picked], minlength=5)
    share = np.bincount(train_labels, minlength=5) / len(train_labels)
    quota = share * size
    # largest remainder: each class within one of its ideal share, capped by what the test set holds
    assert np.all(got <= np.minimum(np.ceil(quota), per_class))
    assert np.all(got >= np.minimum(np.floor(quota), per_class))
    assert np.all(got[share == 0] == 0)  # never a class the client does not train on
    if per_class >= size:
        assert got.sum() == size
    again = matched_sample(train_labels, test_labels, size, 5, np.random.default_rng(seed))
    assert np.array_equal(picked, again)


def test_rounds_record_matched_and_validation_scores_per_client():
    cfg = tiny_config(**{"matched-test-size": 120, "val-fraction": 0.2})
    record = run_experiment(cfg).rounds[-1]
    assert record["alma_matched"] == pytest.approx(np.mean(list(record["client_matched_acc"].values())))
    assert record["val_alma"] == pytest.approx(np.mean(list(record["client_val_acc"].values())))
    for pid in range(cfg.data.num_clients):
        data = training_data(cfg, pid)
        assert 100 <= len(data.matched_y) <= 120 and len(data.val_y) > 0  # digits: few tests per class
        assert set(data.matched_y.tolist()) <= set(data.train_y.tolist())
    # the matched sample is far larger than the own split: its SE is smaller
    assert record["alma_matched_se"] < record["alma_se"]


def test_rounds_jsonl_keeps_each_clients_global_accuracy(tmp_path):
    cfg = tiny_config(**{"out-dir": str(tmp_path), "rounds": 3, "eval-every": 2})
    run_experiment(cfg)
    lines = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    evaluated = [r for r in lines if r["evaluated"]]
    assert [r["round"] for r in evaluated] == [2, 3]
    for record in evaluated:
        per_client = record["client_global_acc"]
        assert sorted(map(int, per_client)) == sorted(record["participants"])
        assert all(0.0 <= acc <= 1.0 for acc in per_client.values())
        assert record["global_acc"] == pytest.approx(np.mean(list(per_client.values())))
        assert per_client != record["client_acc"]  # the global test set, not the own split


def test_without_matched_sample_or_validation_split_nothing_is_claimed():
    cfg = tiny_config(**{"matched-test-size": 0, "val-fraction": 0.0})
    record = run_experiment(cfg).rounds[-1]
    assert math.isnan(record["alma_matched"]) and math.isnan(record["val_alma"])
    assert record["client_matched_acc"] == {} and record["client_val_acc"] == {}
    assert np.isfinite(record["alma"])


def test_validation_split_is_disjoint_from_train_and_test():
    cfg = tiny_config(**{"val-fraction": 0.25})
    for pid in range(cfg.data.num_clients):
        data = training_data(cfg, pid)
        rows = {tuple(x.flatten().tolist()) for x in data.val_x}
        assert not rows & {tuple(x.flatten().tolist()) for x in data.train_x}
        assert not rows & {tuple(x.flatten().tolist()) for x in data.test_x}


def test_self_distill_targets_each_client_at_its_own_predictions():
    rng = np.random.default_rng(0)
    preds = rng.dirichlet(np.ones(4), size=(3, 6))  # (K, N, C)
    result = FUSIONS.get("self-distill").fuse(preds, FusionConfig())
    assert np.array_equal(result.weights, np.eye(3))
    assert all(np.array_equal(t, p) for t, p in zip(result.targets, preds, strict=True))


def test_self_distill_spends_knfus_steps_with_no_peer_knowledge():
    control = run_experiment(tiny_config(algorithm="self-distill")).rounds
    knfu = run_experiment(tiny_config(algorithm="knfu")).rounds
    for a, b in zip(control, knfu, strict=True):
        assert a["transfer_steps"] == b["transfer_steps"] and a["private_steps"] == b["private_steps"]
        assert a["self_weight"] == 1.0 and np.array_equal(np.array(a["weights"]), np.eye(3))
