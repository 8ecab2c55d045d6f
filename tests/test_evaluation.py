"""What a round measures: eval-every, ALMA's sampling error, test sizes, self-weight, the
fixed global test subset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments.engines import run_experiment
from fedkd.client_steps import training_data
from fedkd.data.federation import client_data
from fedkd.metrics import alma
from tests.conftest import tiny_config


def test_alma_standard_error_golden():
    acc, sizes = {0: 0.8, 1: 0.5}, {0: 20, 1: 10}
    expected = math.sqrt(0.8 * 0.2 / 20 + 0.5 * 0.5 / 10) / 2
    assert alma(acc, sizes)["alma_se"] == pytest.approx(expected)
    assert alma({**acc, 2: float("nan")}, sizes)["alma_clients"] == 2  # the mean covers two clients
    assert math.isnan(alma(acc)["alma_se"])  # no sizes, no claim


def test_eval_every_evaluates_on_schedule_and_always_last():
    cfg = tiny_config(rounds=3, **{"eval-every": 2})
    results = run_experiment(cfg)
    assert [r["evaluated"] for r in results.rounds] == [False, True, True]
    assert math.isnan(results.rounds[0]["alma"]) and not results.rounds[0]["client_acc"]
    assert results.payload["final"]["round"] == 3 and np.isfinite(results.payload["final"]["alma"])


def test_rounds_record_true_test_sizes_and_self_weight():
    cfg = tiny_config(algorithm="fedmd")
    record = run_experiment(cfg).rounds[-1]
    for pid in range(cfg.data.num_clients):
        assert record["client_test_size"][pid] == len(training_data(cfg, pid).test_y)
    assert record["self_weight"] == pytest.approx(1 / cfg.data.num_clients)  # FedMD: uniform
    knfu = run_experiment(tiny_config(algorithm="knfu")).rounds[-1]
    weights = np.array(knfu["weights"])
    assert knfu["self_weight"] == pytest.approx(np.mean(np.diag(weights)))  # all got targets here
    assert math.isnan(run_experiment(tiny_config(algorithm="local")).rounds[-1]["self_weight"])


def test_the_global_test_subset_is_fixed_and_shared_by_every_client():
    cfg = tiny_config(**{"global-test-size": 100})
    first, second = (client_data(cfg.data, cfg.run.seed, pid) for pid in (0, 1))
    assert len(first.global_y) == 100
    assert torch.equal(first.global_x, second.global_x) and torch.equal(first.global_y, second.global_y)
    other = tiny_config(algorithm="dsfl", **{"global-test-size": 100})
    assert torch.equal(client_data(other.data, other.run.seed, 0).global_y, first.global_y)
