"""Fair comparisons: every algorithm gets the same private compute, the same init, the same schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.engines import run_experiment
from fedkd.budget import compute_budget
from fedkd.client_steps import _model, training_data
from fedkd.fusion import FUSIONS
from tests.conftest import tiny_config

ALGORITHMS = FUSIONS.names()  # every registered algorithm: a new one is checked without a word


def _rounds(algorithm: str, match: str) -> list[dict]:
    # one architecture, so fedavg runs too; 3 epochs per round split 2 local + 1 revisit
    cfg = tiny_config(
        algorithm=algorithm, models="mlp", **{"local-epochs": 2, "distill-epochs": 2, "budget-match": match}
    )
    return run_experiment(cfg).rounds


def _per_client(rounds: list[dict], *keys: str) -> list[dict[int, float]]:
    return [{pid: sum(r[key][pid] for key in keys) for pid in r[keys[0]]} for r in rounds]


def test_every_algorithm_makes_the_same_optimiser_steps_per_client_and_round():
    """budget-match = steps (the default): what a method does not spend distilling (local: all
    of it) it spends on private data, so private + transfer steps are equal everywhere."""
    counted = {alg: _rounds(alg, "steps") for alg in ALGORITHMS}
    reference = _per_client(counted["local"], "private_steps", "transfer_steps")
    assert all(v > 0 for rnd in reference for v in rnd.values())
    for alg, rounds in counted.items():
        assert _per_client(rounds, "private_steps", "transfer_steps") == reference, alg
    # a distilling method really does split its steps: some on the transfer set
    assert all(v > 0 for r in counted["knfu"] for v in r["transfer_steps"].values())
    assert all(v == 0 for r in counted["local"] for v in r["transfer_steps"].values())
    cfg = tiny_config(models="mlp", **{"distill-epochs": 2})
    makeup = compute_budget(cfg).transfer_steps
    assert makeup == 2 * -(-cfg.data.transfer_size // cfg.train.batch_size)
    knfu, local = counted["knfu"][0], counted["local"][0]
    assert all(local["private_steps"][p] == knfu["private_steps"][p] + makeup for p in local["private_steps"])


def test_under_equal_passes_every_algorithm_trains_on_the_same_private_samples():
    """budget-match = passes (papers' protocol): the same private epochs; distillation extra."""
    counted = {alg: _rounds(alg, "passes") for alg in ALGORITHMS}
    reference = _per_client(counted["local"], "private_samples")
    assert all(v > 0 for rnd in reference for v in rnd.values())
    for alg, rounds in counted.items():
        assert _per_client(rounds, "private_samples") == reference, alg


def test_the_budget_counts_private_epochs_times_partition_size():
    cfg = tiny_config(algorithm="knfu-guard", models="mlp", **{"local-epochs": 2, "budget-match": "passes"})
    rounds = run_experiment(cfg).rounds
    for pid in range(cfg.data.num_clients):
        data = training_data(cfg, pid)
        assert len(data.guard_y) > 0  # the guard holds a slice out of training ...
        whole = len(data.train_y) + len(data.guard_y)  # ... yet every epoch is a full partition long
        assert rounds[0]["private_samples"][pid] == 3 * whole


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_budget_is_recorded_and_equal_in_private_epochs(algorithm):
    cfg = tiny_config(algorithm=algorithm, models="mlp")
    budget = compute_budget(cfg)
    assert budget.private_epochs == cfg.train.local_epochs + cfg.train.revisit_epochs
    client_distils = FUSIONS.get(algorithm).uploads == "predictions"  # feddf distils on the server
    assert budget.distill_epochs == (cfg.train.distill_epochs if client_distils else 0)
    assert budget.server_distill_steps == (cfg.fusion.feddf_server_steps if algorithm == "feddf" else 0)


def test_dsfl_works_on_plain_probabilities_and_the_others_at_the_configured_temperature():
    assert compute_budget(tiny_config(algorithm="dsfl")).temperature == 1.0
    assert compute_budget(tiny_config(algorithm="selective-fd")).temperature == 1.0
    assert compute_budget(tiny_config(algorithm="kt-pfl")).temperature == 10.0  # its reference code's T
    for alg in ("fedmd", "fedmd-nopretrain", "knfu", "knfu-guard", "feddf"):
        assert compute_budget(tiny_config(algorithm=alg)).temperature == 3.0


@pytest.mark.parametrize("algorithm", ["fedavg", "knfu", "local"])
def test_clients_of_one_architecture_start_from_one_shared_model(algorithm):
    cfg = tiny_config(algorithm=algorithm, models="mlp")
    models = [_model(cfg, pid, training_data(cfg, pid), None) for pid in range(cfg.data.num_clients)]
    for other in models[1:]:
        for (key, a), b in zip(models[0].state_dict().items(), other.state_dict().values(), strict=True):
            assert torch.equal(a, b), key


def test_fedavg_round_one_averages_identical_starting_points():
    """With one shared init, FedAvg's first average stays close to every client's model: the
    averaged model beats chance, which averaging unrelated random networks does not ensure."""
    cfg = tiny_config(algorithm="fedavg", models="mlp", rounds=1)
    first = run_experiment(cfg).rounds[0]
    assert np.isfinite(first["alma"]) and first["global_acc"] > 0.3


def test_fedmd_public_subset_is_fresh_each_round_and_shrinks_the_exchange():
    full = run_experiment(tiny_config(algorithm="fedmd")).rounds
    cfg = tiny_config(algorithm="fedmd", **{"fedmd-subset": 25})
    subset = run_experiment(cfg).rounds
    assert all(np.isfinite(r["alma"]) for r in subset) and not any(r["failed_clients"] for r in subset)
    assert subset[0]["bytes_up"] < full[0]["bytes_up"] / 3  # 25 of 100 rows per client (+ array headers)
    from fedkd.fusion import FUSIONS

    rows = [FUSIONS.get("fedmd").transfer_rows(cfg, r) for r in (1, 2)]
    assert len(rows[0]) == 25 and not np.array_equal(rows[0], rows[1])
    assert FUSIONS.get("knfu").transfer_rows(cfg, 1) is None  # only FedMD draws subsets


def test_public_pretraining_is_offered_to_every_algorithm_alike():
    from fedkd.client_steps import local_step

    states = {}
    for alg in ("local", "knfu"):
        cfg = tiny_config(algorithm=alg, **{"pretrain-epochs": 2, "local-epochs": 1})
        assert compute_budget(cfg).pretrain_epochs == 2
        states[alg] = local_step(cfg, 0, 1, None, predict=False).state
    plain = local_step(tiny_config(algorithm="local", **{"local-epochs": 1}), 0, 1, None, predict=False).state
    assert all(torch.equal(states["local"][k], states["knfu"][k]) for k in plain)  # same for both
    assert any(not torch.equal(states["local"][k], plain[k]) for k in plain)  # and it did train


def test_fedavg_sends_the_global_model_exactly_to_clients_that_do_not_hold_it():
    """Partial participation: a client drawn after sitting out gets the latest average with
    train.local; a client that adopted it last round does not get it twice."""
    cfg = tiny_config(algorithm="fedavg", models="mlp", rounds=4, fraction=0.5, **{"num-clients": 4})
    rounds = run_experiment(cfg).rounds
    model_bytes = rounds[0]["bytes_down"] / len(rounds[0]["participants"])  # round 1: distil only
    stale_rounds = 0
    for before, now in zip(rounds, rounds[1:], strict=False):
        stale = set(now["participants"]) - set(before["participants"])
        stale_rounds += bool(stale)
        assert now["bytes_down"] == model_bytes * (len(now["participants"]) + len(stale))
    assert stale_rounds > 0  # the draw did make clients sit out


def test_a_client_trains_from_the_global_model_it_is_sent():
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

    from clients.client_app import make_client_app
    from experiments.engines import task_identity
    from fedkd.client_steps import local_step
    from fedkd.protocol import CONFIG_KEY, MODEL_KEY, WEIGHTS_KEY

    cfg = tiny_config(algorithm="fedavg", models="mlp")
    own = local_step(cfg, 0, 1, None, predict=False).state  # what the client holds
    sent = local_step(cfg, 1, 1, None, predict=False).state  # another model: the "global" one
    context = Context(1, 1, {"partition-id": 0}, RecordDict({MODEL_KEY: ArrayRecord(own)}), {})
    content = RecordDict(
        {
            CONFIG_KEY: ConfigRecord({"server-round": 2, "upload": "weights"}),
            WEIGHTS_KEY: ArrayRecord(sent),
        }
    )
    with task_identity(1):
        reply = make_client_app(cfg)(Message(content, dst_node_id=1, message_type="train.local"), context)
    uploaded = reply.content[WEIGHTS_KEY].to_torch_state_dict()
    expected = local_step(cfg, 0, 2, sent, predict=False).state
    assert all(torch.equal(uploaded[k], expected[k]) for k in expected)


def test_fedavg_spends_its_whole_private_budget_before_the_upload():
    from fedkd.client_steps import distill_step, local_step

    cfg = tiny_config(algorithm="fedavg", models="mlp")
    trained = local_step(cfg, 0, 1, None, predict=False)
    makeup = compute_budget(cfg).transfer_steps  # the steps it does not distil, spent before the upload
    steps_per_epoch = -(-len(training_data(cfg, 0).train_y) // cfg.train.batch_size)
    assert trained.metrics["private-steps"] == 2 * steps_per_epoch + makeup  # local + revisit + makeup
    passes = tiny_config(algorithm="fedavg", models="mlp", **{"budget-match": "passes"})
    trained = local_step(passes, 0, 1, None, predict=False)
    assert trained.metrics["private-samples"] == 2 * len(training_data(cfg, 0).train_y)  # local + revisit
    adopted = distill_step(cfg, 0, 1, None, None, replacement=trained.state)
    assert adopted.metrics["private-samples"] == 0  # the average is evaluated as is
    assert adopted.metrics["private-steps"] == adopted.metrics["transfer-steps"] == 0


def test_fedmd_pretrains_on_the_labelled_transfer_set_and_records_those_steps():
    """FedMD's transfer-learning phase runs (fedmd-nopretrain does not), before round 1 only, and
    its steps are shown apart from the per-round budget every method shares."""
    from fedkd.client_steps import local_step

    fedmd, plain = tiny_config(algorithm="fedmd"), tiny_config(algorithm="fedmd-nopretrain")
    assert compute_budget(fedmd).pretrain_epochs == fedmd.fusion.fedmd_pretrain_epochs > 0
    assert compute_budget(plain).pretrain_epochs == 0
    first, second = local_step(fedmd, 0, 1, None, predict=False), local_step(plain, 0, 1, None, predict=False)
    assert any(not torch.equal(first.state[k], second.state[k]) for k in first.state)
    steps = -(-fedmd.data.transfer_size // fedmd.train.batch_size) * fedmd.fusion.fedmd_pretrain_epochs
    assert first.metrics["pretrain-steps"] == steps and second.metrics["pretrain-steps"] == 0
    later = local_step(fedmd, 0, 2, first.state, predict=False)  # a client that holds a model
    assert later.metrics["pretrain-steps"] == 0
    rounds = run_experiment(tiny_config(algorithm="fedmd", **{"fedmd-pretrain-epochs": 1})).rounds
    assert rounds[0]["pretrain_steps"] and not rounds[1]["pretrain_steps"]
