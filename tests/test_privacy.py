"""Noise on soft targets: the mechanism, the accounting, the audit, and the run integration."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.engines import run_experiment
from fedkd.audit import membership_auc
from fedkd.config import PrivacyConfig
from fedkd.knowledge import softmax
from fedkd.privacy import PrivacyLedger, add_noise, clip_rows, noise_scale, privatize, project_to_simplex
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


def test_target_epsilon_calibration_golden():
    cfg = PrivacyConfig(
        mechanism="gaussian",
        calibrate_from="target-epsilon",
        target_epsilon=0.5,
        delta=1e-5,
        clip=1.0,
        sensitivity_model="row",
    )
    assert noise_scale(cfg, 200) == pytest.approx(math.sqrt(2 * math.log(1.25e5)) / 0.5)
    client = PrivacyConfig(mechanism="laplace", calibrate_from="target-epsilon", target_epsilon=2.0, clip=1.0)
    assert noise_scale(client, 200) == pytest.approx(200 / 2.0)  # L1 sensitivity of 200 rows / epsilon


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
    assert laplace.epsilon_for(3) == pytest.approx(3 * 0.5)  # basic composition of eps = 1 / 2


def test_run_reports_epsilon_and_stops_at_max_epsilon():
    cfg = tiny_config(
        rounds=4, mechanism="gaussian", **{"noise-multiplier": 20.0, "sensitivity-model": "row"}
    )
    full = run_experiment(cfg)
    eps = [max(r["epsilon"].values()) for r in full.rounds]
    assert eps == sorted(eps) and eps[0] > 0
    assert "sensitivity model: row" in full.payload["privacy"]["accounting"]
    capped = run_experiment(cfg.with_overrides({"max-epsilon": (eps[1] + eps[2]) / 2}))
    assert len(capped.rounds) == 2 and "stopped before round 3" in capped.payload["stopped"]


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("noise-multiplier=-1", "noise-multiplier=-1.0 is invalid"),
        ("delta=1", "delta=1.0 is invalid; allowed: 0 < delta < 1"),
        ("target-epsilon=0", "target-epsilon=0.0 is invalid; allowed: epsilon > 0"),
        ("target-epsilon=-3", "target-epsilon=-3.0 is invalid"),
        ("mechanism=shot", "unknown mechanism 'shot'"),
    ],
)
def test_bad_privacy_settings_exit_2_with_one_line(setting, fragment):
    result = CliRunner().invoke(main, ["run", "--set", setting, "--dry-run"])
    assert result.exit_code == 2 and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_audit_noise_lowers_membership_inference_auc():
    cfg = tiny_config(models="mlp", rounds=3, **{"local-epochs": 15, "num-clients": 2, "transfer-size": 60})
    rows = membership_auc(cfg, [3.0])
    clean, noisy = rows[0], rows[1]
    assert clean["noise_multiplier"] == 0.0 and clean["auc"] > 0.6  # an overfit model leaks membership
    assert noisy["auc"] < clean["auc"] - 0.1


def test_privacy_tradeoff_figure(tmp_path):
    from PIL import Image

    from experiments.plots import privacy_tradeoff

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
    audit = [
        {"noise_multiplier": 0.0, "auc": 0.7},
        {"noise_multiplier": 0.1, "auc": 0.68},
        {"noise_multiplier": 1.0, "auc": 0.52},
    ]
    path = privacy_tradeoff(rows, audit, tmp_path / "privacy.png")
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] >= 800
    assert path.with_suffix(".pdf").exists()
