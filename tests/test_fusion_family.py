"""The federated-distillation family KnFu is judged against: KT-pFL, FedDF, Selective-FD.

Golden values of each core step on examples small enough to compute by hand, then one short
run of each through the real round loop (in-process engine)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments.engines import run_experiment
from fedkd.config import ConfigError, FusionConfig
from fedkd.fusion import FUSIONS
from fedkd.fusion.ktpfl import COEFFICIENTS, coefficient_gradient, objective, update_coefficients
from fedkd.fusion.selective_fd import select_targets
from fedkd.knowledge import softmax
from tests.conftest import tiny_config

P = np.array([[[0.8, 0.2]], [[0.2, 0.8]]])  # (K=2, N=1, C=2)
EARLIER = {"ktpfl_step_rule": "fixed", "ktpfl_simplex": "projection"}  # the rule before issue 20


# -- KT-pFL ----------------------------------------------------------------------------------------
def test_ktpfl_gradient_golden():
    """Uniform C: t_0 = t_1 = (0.5, 0.5). dJ/dc_0j = p_j . (log t_0 - log p_0) + 1."""
    g = coefficient_gradient(np.full((2, 2), 0.5), P, rho=0.0)
    log_ratio = np.log([0.5 / 0.8, 0.5 / 0.2])
    np.testing.assert_allclose(g[0], [P[0, 0] @ log_ratio + 1, P[1, 0] @ log_ratio + 1])
    np.testing.assert_allclose(g[0, 1] - g[0, 0], 0.6 * math.log(4))  # 0.6 (log 2.5 - log 0.625)


def test_ktpfl_fixed_step_golden_and_rows_stay_on_the_simplex():
    """With two entries per row the projection adds back half the deficit to each, so
    c_00 = 0.5 + eta (g_01 - g_00) / 2 = 0.5 + 0.1 * 0.3 * ln 4."""
    c = update_coefficients(
        np.full((2, 2), 0.5), P, FusionConfig(ktpfl_step_size=0.1, ktpfl_rho=0.0, **EARLIER)
    )
    np.testing.assert_allclose(c[0], [0.5 + 0.03 * math.log(4), 0.5 - 0.03 * math.log(4)])
    np.testing.assert_allclose(c[1], c[0][::-1])  # the mirrored client
    np.testing.assert_allclose(c.sum(axis=1), 1.0)


def test_ktpfl_regulariser_golden_and_pull_towards_uniform():
    c = np.array([[0.9, 0.1], [0.5, 0.5]])
    g = coefficient_gradient(c, P, rho=2.0) - coefficient_gradient(c, P, rho=0.0)
    np.testing.assert_allclose(g, 4.0 * (c - 0.5))  # 2 rho (C - 1/K)
    assert objective(c, P, 2.0) - objective(c, P, 0.0) == pytest.approx(2.0 * 0.32)
    for rule in ({}, EARLIER):  # the reference rule and the earlier one
        free = update_coefficients(
            np.full((2, 2), 0.5), P, FusionConfig(ktpfl_steps=20, ktpfl_rho=0.0, **rule)
        )
        held = update_coefficients(
            np.full((2, 2), 0.5), P, FusionConfig(ktpfl_steps=20, ktpfl_rho=5.0, **rule)
        )
        assert abs(held[0, 0] - 0.5) < abs(free[0, 0] - 0.5), rule


def test_ktpfl_steps_lower_the_objective_and_targets_are_c_times_predictions():
    preds = softmax(np.random.default_rng(0).normal(size=(4, 30, 5)) * 2)
    c0 = np.full((4, 4), 0.25)
    for cfg in (FusionConfig(ktpfl_steps=5), FusionConfig(ktpfl_step_size=0.05, ktpfl_steps=5, **EARLIER)):
        c = update_coefficients(c0, preds, cfg)
        assert objective(c, preds, cfg.ktpfl_rho) < objective(c0, preds, cfg.ktpfl_rho), cfg
    result = FUSIONS.get("kt-pfl").fuse(preds, cfg)
    np.testing.assert_allclose(result.weights, c)
    for k, target in enumerate(result.targets):
        np.testing.assert_allclose(target, np.einsum("j,jnc->nc", c[k], preds))


def test_ktpfl_carries_c_across_rounds_and_keeps_absent_clients_mass():
    cfg = tiny_config(algorithm="kt-pfl", **{"num-clients": 3, "ktpfl-step-size": 0.2})
    ktpfl = FUSIONS.get("kt-pfl")
    state = ktpfl.start(cfg)
    preds = softmax(np.random.default_rng(1).normal(size=(3, 20, 4)) * 3)
    first = ktpfl.fuse_round(preds, [0, 1, 2], state, cfg).weights.copy()
    second = ktpfl.fuse_round(preds, [0, 1, 2], state, cfg).weights
    assert not np.allclose(first, second)  # the second round starts from the first one's C
    np.testing.assert_allclose(state[COEFFICIENTS], second)
    before = state[COEFFICIENTS].copy()
    ktpfl.fuse_round(preds[:2], [0, 2], state, cfg)  # client 1 sits out
    np.testing.assert_allclose(state[COEFFICIENTS][:, 1], before[:, 1])  # its column is kept
    np.testing.assert_allclose(state[COEFFICIENTS].sum(axis=1), 1.0)


# -- Selective-FD ----------------------------------------------------------------------------------
def test_server_selector_golden():
    """Row 0: both clients, ensemble (0.9, 0.1), kept. Row 1: only client 1, (0.5, 0.5), entropy
    1 > 0.8: dropped. Row 2: nobody uploaded: dropped."""
    nan = [np.nan, np.nan]
    preds = np.array([[[1.0, 0.0], nan, nan], [[0.8, 0.2], [0.5, 0.5], nan]])  # (K=2, N=3, C=2)
    target, weights = select_targets(preds, max_entropy=0.8)
    np.testing.assert_allclose(target[0], [0.9, 0.1])
    assert np.isnan(target[1:]).all()
    np.testing.assert_allclose(weights, [[0.5, 0.5], [0.5, 0.5]])  # each gave half of the kept row
    result = FUSIONS.get("selective-fd").fuse(preds, FusionConfig(selective_entropy=1.0))
    np.testing.assert_allclose(result.targets[0][1], [0.5, 0.5])  # at threshold 1 the flat row stays
    np.testing.assert_allclose(result.weights[0], [0.25, 0.75])  # row 0: 1/2 each, row 1: client 1


def test_selective_fd_run_uploads_sparse_rows_and_distils_only_where_targets_are():
    cfg = tiny_config(algorithm="selective-fd", **{"selective-quantile": 0.5, "selective-entropy": 0.95})
    dense = run_experiment(cfg.with_overrides({"algorithm": "fedmd"})).rounds[0]
    rounds = run_experiment(cfg).rounds
    first = rounds[0]
    assert not first["failed_clients"] and np.isfinite(rounds[-1]["alma"])
    assert first["bytes_up"] < 0.8 * dense["bytes_up"]  # withheld rows are not sent
    distilled = list(first["transfer_samples"].values())
    assert all(0 < d < cfg.data.transfer_size for d in distilled)  # only rows with a target
    assert len(set(distilled)) == 1  # one shared target
    np.testing.assert_allclose(np.array(first["weights"]).sum(axis=1), 1.0)


# -- FedDF -----------------------------------------------------------------------------------------
def test_feddf_averages_per_architecture_golden_and_zero_steps_is_fedavg():
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from experiments.engines import task_identity
    from fedkd.protocol import KNOWLEDGE_KEY, METRICS_KEY, WEIGHTS_KEY
    from server.exchanges import DistilledWeightExchange, model_shapes, target_record

    cfg = tiny_config(algorithm="feddf", models="mlp,cnn-s,mlp", **{"feddf-server-steps": 0})
    exchange = DistilledWeightExchange(cfg)
    replies = {}
    for pid, (value, n) in enumerate([(1.0, 10), (7.0, 20), (4.0, 30)]):
        shapes = model_shapes(cfg, exchange.arch(pid))
        content = RecordDict(
            {
                METRICS_KEY: MetricRecord({"num-examples": n, "partition-id": pid}),
                WEIGHTS_KEY: ArrayRecord({k: torch.full(s, value) for k, s in shapes.items()}),
                KNOWLEDGE_KEY: target_record(np.full((100, 10), 0.1)),
            }
        )
        with task_identity(1):
            replies[pid] = Message(content, dst_node_id=1, message_type="train.local")
    accepted = {pid: exchange.accept(r, 1) for pid, r in replies.items()}
    contents, weights = exchange.combine(accepted, replies, 1)
    mlp = contents[0][WEIGHTS_KEY].to_torch_state_dict()
    cnn = contents[1][WEIGHTS_KEY].to_torch_state_dict()
    assert all(torch.allclose(v, torch.full_like(v, 3.25)) for v in mlp.values())  # (1*10 + 4*30) / 40
    assert all(torch.equal(v, torch.full_like(v, 7.0)) for v in cnn.values())  # alone in its group
    np.testing.assert_allclose(weights, [[0.25, 0, 0.75], [0, 1, 0], [0.25, 0, 0.75]])


def test_feddf_server_distillation_moves_each_architecture_towards_the_ensemble():
    from fedkd.data.federation import transfer_inputs
    from fedkd.fusion.feddf import distil_architecture
    from fedkd.fusion.fedmd import class_score_consensus
    from fedkd.models import build_model
    from fedkd.training import predict_proba

    cfg = tiny_config(algorithm="feddf", **{"feddf-server-steps": 30})
    x = transfer_inputs(cfg.data, cfg.run.seed)
    preds = softmax(np.random.default_rng(0).normal(size=(3, len(x), 10)) * 3, 3.0)
    teacher = class_score_consensus(preds)  # FedDF's averaged logits at T
    model = build_model("mlp", (1, 8, 8), 10, 0)
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def kl(state):
        model.load_state_dict(state)
        p = predict_proba(model, x, 3.0)
        return float((teacher * np.log(teacher / p)).sum(axis=1).mean())

    distilled = distil_architecture("mlp", start, x, teacher, cfg, server_round=1, temperature=3.0)
    assert kl(distilled) < 0.75 * kl(start)
    again = distil_architecture("mlp", start, x, teacher, cfg, server_round=1, temperature=3.0)
    assert all(torch.equal(distilled[k], again[k]) for k in again)  # seeded: reproducible


def test_feddf_run_reports_server_compute_apart_and_keeps_the_client_budget():
    cfg = tiny_config(algorithm="feddf", **{"feddf-server-steps": 20})
    rounds = run_experiment(cfg).rounds
    local = run_experiment(cfg.with_overrides({"algorithm": "local"})).rounds
    assert [r["private_samples"] for r in rounds] == [r["private_samples"] for r in local]
    assert all(r["transfer_samples"] == {0: 0.0, 1: 0.0, 2: 0.0} for r in rounds)  # clients do not distil
    assert rounds[0]["server_compute_s"] > 0 and np.isfinite(rounds[-1]["alma"])
    assert rounds[0]["bytes_up"] > rounds[0]["bytes_down"] > 4 * 1000  # weights + predictions up
    np.testing.assert_allclose(np.array(rounds[0]["weights"]), np.full((3, 3), 1 / 3))
    plain = run_experiment(cfg.with_overrides({"feddf-server-steps": 0})).rounds
    assert rounds[-1]["client_acc"] != plain[-1]["client_acc"]  # the server's steps changed the models


def test_feddf_refuses_noise_it_cannot_account_for():
    with pytest.raises(ConfigError, match="uploads its model weights unprotected"):
        tiny_config(algorithm="feddf", mechanism="gaussian")


def test_ktpfl_run_records_c_as_the_weights():
    rounds = run_experiment(tiny_config(algorithm="kt-pfl")).rounds
    for record in rounds:
        w = np.array(record["weights"])
        assert w.shape == (3, 3) and not record["failed_clients"]
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        assert record["self_weight"] == pytest.approx(np.mean(np.diag(w)))
    assert not np.allclose(rounds[0]["weights"], 1 / 3) and rounds[1]["weights"] != rounds[0]["weights"]


# -- the listing -----------------------------------------------------------------------------------
def test_algorithm_listing_says_what_each_uploads_and_its_settings_are_real_keys():
    from click.testing import CliRunner

    from experiments.cli import main
    from fedkd.config import config_keys

    result = CliRunner().invoke(main, ["algorithms"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line and line[0] != " "}
    assert "sparse predictions (mask + values)" in lines["selective-fd"]
    assert "weights + predictions" in lines["feddf"] and "NeurIPS" in lines["feddf"]
    assert " yes " in lines["kt-pfl"] and "2111.02862" in lines["kt-pfl"]  # personalised
    assert set(FUSIONS.names()) <= set(lines)
    for name in FUSIONS.names():
        assert set(FUSIONS.get(name).keys) <= set(config_keys()), name


def test_feddf_server_distills_every_architecture_towards_all_clients_averaged_logits(monkeypatch):
    """The teacher is softmax(mean_k log p_k) over every client (not mean probabilities, not only
    that architecture's clients), and each architecture gets its own average as the start."""
    import fedkd.fusion.feddf as feddf
    from fedkd.fusion import FUSIONS

    seen = {}

    def record(arch, state, x, teacher, cfg, server_round, temperature):
        seen[arch] = (state, np.asarray(teacher), x.shape[0])
        assert temperature == 1.5 != cfg.train.temperature  # the algorithm's own, not the key's
        return state

    monkeypatch.setattr(feddf, "distil_architecture", record)
    monkeypatch.setattr(FUSIONS.get("feddf"), "fixed_temperature", 1.5)  # a variant that fixes T
    cfg = tiny_config(algorithm="feddf", models="mlp,cnn-s", **{"feddf-server-steps": 2})
    rng = np.random.default_rng(0)
    preds = rng.dirichlet(np.ones(10), size=(3, cfg.data.transfer_size))  # (K, N, C)
    models = {"mlp": {"w": 1}, "cnn-s": {"w": 2}}
    out = FUSIONS.get("feddf").server_distill(models, preds, cfg, server_round=1)
    logits = np.log(preds).mean(axis=0)  # (N, C)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert set(seen) == {"mlp", "cnn-s"} and out == models
    for arch, (state, teacher, rows) in seen.items():
        assert state == models[arch] and rows == cfg.data.transfer_size
        np.testing.assert_allclose(teacher, expected, atol=1e-6)
        assert not np.allclose(teacher, preds.mean(axis=0), atol=1e-3)  # not the mean of probabilities
