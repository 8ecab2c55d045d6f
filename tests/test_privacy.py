"""Noise on soft targets: the mechanism, the accounting, the audit, and the run integration."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

from experiments.audit import run_audit
from experiments.cli import main
from experiments.engines import run_experiment
from fedkd.config import PrivacyConfig
from fedkd.knowledge import softmax
from fedkd.privacy import (
    PrivacyLedger,
    add_noise,
    calibrated_multiplier,
    clip_rows,
    noise_scale,
    privatize,
    project_to_simplex,
    sensitivity,
)
from tests.conftest import tiny_config


def _numbers(results):
    return [(r["alma"], r["client_acc"], r["weights"]) for r in results.rounds]


def test_noise_off_is_bit_identical_to_no_privacy_settings():
    plain = run_experiment(tiny_config())
    off = run_experiment(tiny_config(mechanism="none", **{"noise-multiplier": 5.0}))
    assert _numbers(plain) == _numbers(off)
    assert all(r["epsilon"] is None for r in off.rounds)


@pytest.mark.parametrize("mechanism, expected_std", [("gaussian", 0.3), ("laplace", 0.3 * math.sqrt(2))])
def test_measured_noise_matches_the_configured_scale(mechanism, expected_std):
    cfg = PrivacyConfig(mechanism=mechanism, noise_multiplier=0.3, clip=1.0)
    x = np.zeros((20000, 10))
    noise = add_noise(x, cfg, rows=200, rng=np.random.default_rng(0))
    assert noise.mean() == pytest.approx(0.0, abs=0.005)
    assert noise.std() == pytest.approx(expected_std, rel=0.01)


def test_replace_one_sensitivities_golden():
    row = PrivacyConfig(mechanism="gaussian", clip=0.5, sensitivity_model="row")
    client = PrivacyConfig(mechanism="gaussian", clip=0.5, sensitivity_model="client")
    assert sensitivity(row, 200) == pytest.approx((math.sqrt(2) * 0.5, 1.0))
    assert sensitivity(client, 200) == pytest.approx((math.sqrt(400) * 0.5, 200.0))


def test_no_two_same_orthant_clipped_rows_differ_by_more_than_the_sensitivity():
    rng = np.random.default_rng(0)
    for order, bound in ((2, math.sqrt(2)), (1, 2.0)):
        a = clip_rows(rng.dirichlet(np.full(10, 0.05), 20000), 1.0, order)  # probabilities, often one-hot
        b = clip_rows(rng.dirichlet(np.full(10, 0.05), 20000), 1.0, order)
        worst = np.linalg.norm(a - b, ord=order, axis=1).max()
        assert bound * 0.95 < worst <= bound + 1e-12  # the bound is reached, never passed
        logs = clip_rows(np.log(np.clip(a, 1e-12, None)), 1.0, order)  # log-probabilities: <= 0
        assert (
            np.linalg.norm(
                logs - clip_rows(np.log(np.clip(b, 1e-12, None)), 1.0, order), ord=order, axis=1
            ).max()
            <= bound + 1e-12
        )


@pytest.mark.parametrize("accountant", ["analytic", "rdp"])
def test_printed_epsilon_matches_dp_accounting_for_the_replace_one_relation(accountant):
    import dp_accounting

    cfg = PrivacyConfig(
        mechanism="gaussian", noise_multiplier=1.0, sensitivity_model="row", accountant=accountant
    )
    ledger = PrivacyLedger(cfg, rows=200)
    z = 1.0 / math.sqrt(2)  # per-entry std c, replace-one L2 sensitivity sqrt(2) c
    assert ledger.effective_multiplier() == pytest.approx(z)
    if accountant == "rdp":
        reference = dp_accounting.rdp.RdpAccountant()
    else:  # an independent path: dp-accounting's privacy-loss-distribution accountant
        reference = dp_accounting.pld.PLDAccountant()
    reference.compose(dp_accounting.GaussianDpEvent(z), 10)
    assert ledger.epsilon_for(10) == pytest.approx(reference.get_epsilon(1e-5), rel=0.01)
    assert "replace-one" in ledger.method and accountant in ledger.method
    # the add/remove sensitivity c would have understated it (the bug this guards against)
    understated = dp_accounting.get_epsilon_gaussian(1.0 / math.sqrt(10), 1e-5)
    assert ledger.epsilon_for(10) > 1.3 * understated


@pytest.mark.parametrize("accountant", ["analytic", "rdp"])
@pytest.mark.parametrize("target", [0.5, 1.0, 4.0, 16.0])
def test_target_epsilon_calibration_achieves_the_target_for_any_epsilon(accountant, target):
    cfg = PrivacyConfig(
        mechanism="gaussian",
        calibrate_from="target-epsilon",
        target_epsilon=target,
        sensitivity_model="client",
        accountant=accountant,
    )
    ledger = PrivacyLedger(cfg, rows=50)
    assert ledger.epsilon_for(1) == pytest.approx(target, rel=1e-4)
    if accountant == "analytic":  # an independent accountant agrees: dp-accounting's PLD
        import dp_accounting

        pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
        pld.compose(dp_accounting.GaussianDpEvent(ledger.effective_multiplier()))
        assert pld.get_epsilon(1e-5) == pytest.approx(target, rel=0.02)
    assert noise_scale(cfg, 50) == pytest.approx(
        math.sqrt(100) * calibrated_multiplier(target, 1e-5, accountant)
    )


def test_classic_gaussian_formula_would_break_the_target_above_epsilon_one():
    import dp_accounting

    classic = math.sqrt(2 * math.log(1.25 / 1e-5)) / 16.0  # multiplier the old code used for eps = 16
    assert dp_accounting.get_epsilon_gaussian(classic, 1e-5) > 16.0
    assert calibrated_multiplier(16.0, 1e-5, "analytic") > classic


def test_laplace_calibration_uses_the_replace_one_l1_sensitivity():
    client = PrivacyConfig(mechanism="laplace", calibrate_from="target-epsilon", target_epsilon=2.0, clip=1.0)
    assert noise_scale(client, 200) == pytest.approx(2 * 200 / 2.0)  # L1: 2 c N, over epsilon
    assert PrivacyLedger(client, 200).epsilon_for(3) == pytest.approx(3 * 2.0)


def test_noise_is_from_the_run_seed_only_in_fedkds_own_simulations():
    from clients.privacy_mod import release_rng

    cfg = tiny_config()
    seeded = [release_rng(cfg, 3, 2, seeded=True).normal(size=8) for _ in range(2)]
    secret = [release_rng(cfg, 3, 2, seeded=False).normal(size=8) for _ in range(2)]
    np.testing.assert_array_equal(*seeded)  # reproducible simulation
    assert not np.allclose(secret[0], secret[1]) and not np.allclose(secret[0], seeded[0])


class Recording:
    """fedkd's ClientApp, noting every metric and info key that its replies carry."""

    def __init__(self, cfg, seen: set[str]) -> None:
        from clients.client_app import make_client_app

        self.app, self.seen = make_client_app(cfg), seen

    def __call__(self, msg, context):
        reply = self.app(msg, context)
        for name in ("metrics", "info"):
            if reply.has_content() and name in reply.content:
                self.seen.update(reply.content[name].keys())
        if reply.has_content() and "weights" in reply.content:
            self.seen.add("weights")
        return reply


def test_every_number_a_client_sends_is_declared():
    from pathlib import Path

    from experiments.engines import run_inprocess
    from fedkd.protocol import unprotected

    declared = unprotected()

    seen: set[str] = set()
    for overrides in ({"algorithm": "knfu-guard"}, {"algorithm": "fedavg", "models": "mlp"}):
        cfg = tiny_config(rounds=1, **overrides)
        run_inprocess(cfg, client_app=Recording(cfg, seen))
    assert {"local-acc", "train-loss", "distill-loss", "rolled-back", "weights", "device"} <= seen
    assert seen <= set(declared), seen - set(declared)
    threat_model = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    assert all(f"`{key}`" in threat_model for key in declared), [
        k for k in declared if f"`{k}`" not in threat_model
    ]


def test_flwr_runs_draw_secret_noise_and_fedkds_own_simulations_repeat_it():
    """The module-level ClientApp (flwr run, SuperNodes) never reproduces a release; the one
    fedkd binds for its simulations always does."""
    from flwr.app import ConfigRecord, RecordDict

    import clients.client_app as client_app
    from experiments.engines import task_identity
    from server.inprocess.grid import InProcessGrid

    cfg = tiny_config(mechanism="gaussian", **{"noise-multiplier": 0.5})

    def release(app) -> np.ndarray:
        grid = InProcessGrid(app, 1, cfg.to_run_config(), workers=1)  # a fresh node each time
        node = next(iter(grid.get_node_ids()))
        settings = ConfigRecord({"server-round": 1, "upload": "predictions"})
        msg = grid.create_message(RecordDict({"config": settings}), "train.local", node, group_id="1")
        (reply,) = grid.send_and_receive([msg])
        return reply.content["knowledge"]["soft"].numpy()

    with task_identity(1):
        seeded = [release(client_app.make_client_app(cfg)) for _ in range(2)]
        secret = [release(client_app.app) for _ in range(2)]
    np.testing.assert_array_equal(*seeded)
    assert not np.allclose(secret[0], secret[1])


def test_logits_are_clipped_after_scaling_by_the_temperature(monkeypatch):
    import fedkd.privacy as privacy

    seen = []
    real = privacy.add_noise
    monkeypatch.setattr(privacy, "add_noise", lambda x, *a, **k: seen.append(x) or real(x, *a, **k))
    soft = softmax(np.random.default_rng(0).normal(size=(50, 10)))
    cfg = PrivacyConfig(mechanism="gaussian", noise_multiplier=0.1, noise_on="logits", clip=0.5)
    privatize(soft, cfg, 4.0, np.random.default_rng(1))
    assert np.linalg.norm(seen[0], axis=1).max() <= 0.5 + 1e-9  # what is noised is within the clip


def test_projection_and_clipping():
    np.testing.assert_allclose(
        project_to_simplex(np.array([[0.5, 0.5], [1.2, -0.2], [0.2, 0.2]])),
        [[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]],
    )
    rows = project_to_simplex(np.random.default_rng(0).normal(size=(100, 10)))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    assert (rows >= 0).all()
    clipped = clip_rows(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0, 2)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4]])


@pytest.mark.parametrize("noise_on", ["probabilities", "logits"])
def test_privatized_release_stays_on_the_simplex(noise_on):
    soft = softmax(np.random.default_rng(1).normal(size=(50, 10)))
    cfg = PrivacyConfig(mechanism="gaussian", noise_multiplier=0.5, noise_on=noise_on)
    out = privatize(soft, cfg, 3.0, np.random.default_rng(2))
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert (out >= 0).all() and not np.allclose(out, soft)


def test_epsilon_grows_with_rounds_and_shrinks_with_more_noise():
    def ledger(multiplier, model="row"):
        return PrivacyLedger(
            PrivacyConfig(mechanism="gaussian", noise_multiplier=multiplier, sensitivity_model=model),
            rows=200,
        )

    low, high = ledger(1.0), ledger(4.0)
    eps_low = [low.epsilon_for(r) for r in (1, 2, 5, 10)]
    assert eps_low == sorted(eps_low) and eps_low[0] < eps_low[-1]
    assert all(high.epsilon_for(r) < low.epsilon_for(r) for r in (1, 5, 10))
    # client-level protection of a 200-row release costs far more than row-level
    assert ledger(1.0, "client").epsilon_for(1) > 10 * low.epsilon_for(1)
    laplace = PrivacyLedger(
        PrivacyConfig(mechanism="laplace", noise_multiplier=2.0, sensitivity_model="row"), 200
    )
    assert laplace.epsilon_for(3) == pytest.approx(3 * 1.0)  # basic composition of eps = 2c / 2c


def test_run_reports_epsilon_and_stops_at_max_epsilon():
    cfg = tiny_config(
        rounds=4, mechanism="gaussian", **{"noise-multiplier": 20.0, "sensitivity-model": "row"}
    )
    full = run_experiment(cfg)
    eps = [max(r["epsilon"].values()) for r in full.rounds]
    assert eps == sorted(eps) and eps[0] > 0
    privacy = full.payload["privacy"]
    assert "replace-one neighbouring, row-level" in privacy["accounting"]
    assert privacy["noise_source"].startswith("run seed")  # fedkd's own simulation
    assert {"local-acc", "train-loss", "num-examples"} <= set(privacy["unprotected"])
    capped = run_experiment(cfg.with_overrides({"max-epsilon": (eps[1] + eps[2]) / 2}))
    assert len(capped.rounds) == 2 and "stopped before round 3" in capped.payload["stopped"]


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("noise-multiplier=-1", "noise-multiplier=-1.0 is invalid"),
        ("delta=1", "delta=1.0 is invalid; allowed: 0 < value < 1"),
        ("target-epsilon=0", "target-epsilon=0.0 is invalid; allowed: > 0"),
        ("target-epsilon=-3", "target-epsilon=-3.0 is invalid"),
        ("mechanism=shot", "unknown mechanism 'shot'"),
    ],
)
def test_bad_privacy_settings_exit_2_with_one_line(setting, fragment):
    result = CliRunner().invoke(main, ["run", "--set", setting, "--dry-run"])
    assert result.exit_code == 2 and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_audits_report_both_attacks_with_baselines_and_intervals():
    cfg = tiny_config(models="mlp", rounds=2, alpha=0.3, **{"local-epochs": 5, "num-clients": 6})
    audited = run_audit(cfg, [3.0])
    (clean, noisy), (tv_clean, tv_noisy) = audited["membership"], audited["label_distribution"]
    for row in audited["membership"]:
        assert row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]
        assert row["members"] > 0 and row["non_members"] > 0
    # members and non-members share the client's label mix: labels alone tell nothing
    assert clean["class_frequency_ci"][0] < 0.5 < clean["class_frequency_ci"][1]
    assert all(r["label_only_ci"][0] <= r["label_only_auc"] <= r["label_only_ci"][1] for r in (clean, noisy))
    # without noise the EPD reveals the label histogram far better than a blind guess ...
    assert tv_clean["tv_ci"][1] < tv_clean["tv_prior_ci"][0] and tv_clean["tv"] < tv_clean["tv_uniform"]
    # ... and heavy noise takes most of that away
    assert tv_noisy["tv"] > tv_clean["tv"] + 0.05
    assert noisy["release_accuracy"] < clean["release_accuracy"]


def test_privacy_tradeoff_figure(tmp_path):
    from PIL import Image

    from experiments.figures.privacy import privacy_tradeoff

    base = tiny_config(**{"sensitivity-model": "row"})
    rows = []
    for mechanism, multiplier, alma in [("none", 1.0, 0.9), ("gaussian", 0.1, 0.88), ("gaussian", 1.0, 0.8)]:
        config = base.with_overrides({"mechanism": mechanism, "noise-multiplier": multiplier}).to_run_config()
        rows.append(
            {
                "axes": {"algorithm": "knfu", "mechanism": mechanism, "noise-multiplier": multiplier},
                "config": config,
                "final": {"alma": alma},
            }
        )
    audit = run_audit(tiny_config(rounds=1, **{"num-clients": 3}), [0.1, 1.0])
    path = privacy_tradeoff(rows, audit, tmp_path / "privacy.png")
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] >= 800
    assert path.with_suffix(".pdf").exists()


def test_audit_command_writes_both_attacks_and_the_table(tmp_path):
    out = tmp_path / "audit"
    args = ["audit", "--set", "rounds=1", "--set", "num-clients=3", "--multipliers", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    import json

    saved = json.loads((out / "audit.json").read_text())
    assert saved["config"]["num-clients"] == 3
    assert [r["noise_multiplier"] for r in saved["membership"]] == [0.0, 1.0]
    assert [r["noise_multiplier"] for r in saved["label_distribution"]] == [0.0, 1.0]
    assert (out / "audit.md").read_text() in result.output and (out / "audit.png").exists()
