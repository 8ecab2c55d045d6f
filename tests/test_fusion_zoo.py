"""DS-FL, the FedAvg reference (on Flower's FedAvg) and the KnFu guard."""

import numpy as np
import torch

from experiments.engines import run_experiment
from fedkd.client_steps import distill_step, local_step
from fedkd.config import FusionConfig
from fedkd.fusion import FUSIONS
from fedkd.knowledge import softmax
from tests.conftest import tiny_config


def test_dsfl_golden_entropy_reduction():
    preds = np.array([[[0.6, 0.4]], [[0.8, 0.2]]])  # mean [0.7, 0.3]
    result = FUSIONS.get("dsfl").fuse(preds, FusionConfig(dsfl_temperature=0.1))
    expected = np.exp([7.0, 3.0]) / np.exp([7.0, 3.0]).sum()  # softmax([0.7, 0.3] / 0.1)
    for target in result.targets:
        np.testing.assert_allclose(target[0], expected)
    assert result.targets[0][0, 0] > 0.98  # sharper than the plain mean
    np.testing.assert_allclose(result.weights, np.full((2, 2), 0.5))


def test_dsfl_lower_temperature_means_lower_entropy():
    preds = softmax(np.random.default_rng(0).normal(size=(4, 50, 10)))

    def entropy(t):
        target = FUSIONS.get("dsfl").fuse(preds, FusionConfig(dsfl_temperature=t)).targets[0]
        return float(-(target * np.log(target)).sum(axis=1).mean())

    assert entropy(0.05) < entropy(0.1) < entropy(1.0)


def test_knfu_guard_shares_knfu_fusion_but_is_guarded():
    preds = softmax(np.random.default_rng(2).normal(size=(5, 20, 4)))
    plain, guard = FUSIONS.get("knfu"), FUSIONS.get("knfu-guard")
    assert guard.guarded and not plain.guarded
    np.testing.assert_array_equal(
        plain.fuse(preds, FusionConfig()).weights, guard.fuse(preds, FusionConfig()).weights
    )


def test_guard_rolls_back_a_harmful_distillation():
    cfg = tiny_config(algorithm="knfu-guard", **{"local-epochs": 5, "distill-epochs": 5, "revisit-epochs": 0})
    trained = local_step(cfg, 0, 1, None, predict=True)
    wrong = np.roll(np.eye(10), 1, axis=1)[trained.predictions.argmax(axis=1)]  # confidently wrong target
    result = distill_step(cfg, 0, 1, trained.state, wrong * 0.99 + 0.001)
    assert result.metrics["rolled-back"] == 1.0
    assert all(torch.equal(result.state[k], trained.state[k]) for k in trained.state)
    # the same target with a huge tolerance is kept
    lenient = cfg.with_overrides({"guard-tolerance": 1.0})
    kept = distill_step(lenient, 0, 1, trained.state, wrong * 0.99 + 0.001)
    assert kept.metrics["rolled-back"] == 0.0
    assert any(not torch.equal(kept.state[k], trained.state[k]) for k in trained.state)


def test_guarded_run_records_rollbacks_per_round():
    results = run_experiment(tiny_config(algorithm="knfu-guard", rounds=2))
    for record in results.rounds:
        assert set(record["rolled_back"]) <= set(record["client_acc"])


def test_fedavg_run_uses_flower_fedavg_and_reports_weight_bytes():
    cfg = tiny_config(algorithm="fedavg", models="cnn-s")
    fedavg = run_experiment(cfg)
    knfu = run_experiment(cfg.with_overrides({"algorithm": "knfu"}))
    first = fedavg.rounds[0]
    w = np.array(first["weights"])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w == w[0]).all()  # every client gets the same average, weighted by data size
    assert first["bytes_up"] > 4 * 6000 and first["bytes_up"] != knfu.rounds[0]["bytes_up"]
    assert 0.0 < fedavg.rounds[-1]["alma"] <= 1.0


def test_fedavg_average_equals_weighted_mean_of_client_weights():
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from experiments.engines import task_identity
    from fedkd.protocol import METRICS_KEY, WEIGHTS_KEY
    from server.exchanges import WeightExchange, model_shapes

    cfg = tiny_config(algorithm="fedavg", models="mlp")
    shapes = model_shapes(cfg)  # the real layers of the federation's model
    replies = {}
    for pid, (value, n) in enumerate([(1.0, 10), (4.0, 30)]):
        state = {name: torch.full(shape, value) for name, shape in shapes.items()}
        content = RecordDict(
            {
                METRICS_KEY: MetricRecord({"num-examples": n, "partition-id": pid}),
                WEIGHTS_KEY: ArrayRecord(state),
            }
        )
        with task_identity(1):
            replies[pid] = Message(content, dst_node_id=1, message_type="train.local")
    exchange = WeightExchange(cfg)
    accepted = {pid: exchange.accept(r, 1) for pid, r in replies.items()}
    contents, weights = exchange.combine(accepted, replies, 1)
    averaged = contents[0][WEIGHTS_KEY].to_torch_state_dict()
    for value in averaged.values():
        assert torch.allclose(value, torch.full_like(value, 3.25))  # (1*10 + 4*30) / 40
    np.testing.assert_allclose(weights, [[0.25, 0.75], [0.25, 0.75]])
