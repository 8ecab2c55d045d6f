"""Baselines as their papers run them (issue 20): Selective-FD's density-ratio selector (KuLSIF),
KT-pFL's reference step rule for C, FedMD's transfer-learning phase."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedkd import density_ratio
from fedkd.config import FusionConfig
from fedkd.data.federation import client_data
from fedkd.density_ratio import KuLSIF
from fedkd.fusion import FUSIONS
from fedkd.fusion import selective_fd as sfd
from fedkd.fusion.ktpfl import adaptive_step_size, update_coefficients
from tests.conftest import tiny_config


# -- KuLSIF ----------------------------------------------------------------------------------------
def _gaussians() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 1.0, size=(200, 1)), rng.normal(0.0, 2.0, size=(300, 1))  # p, q


def test_kulsif_solves_its_stationarity_condition_and_estimates_a_known_ratio():
    """At the optimum alpha_i = -r(q_i) / (n lam) (the closed form's defining equation). For
    p = N(0, 1), q = N(0, 4) the true ratio is 2 exp(-3 x^2 / 8): 2 at 0, 0.005 at 4."""
    p, q = _gaussians()
    estimator = KuLSIF.fit(p, q, width=0.5)
    assert estimator.lam == pytest.approx(300**-0.5)  # the reference code's n^-1/2
    np.testing.assert_allclose(estimator.alpha, -estimator.ratio(q) / (len(q) * estimator.lam), atol=1e-12)
    ratio = estimator.ratio(np.array([[0.0], [1.0], [2.0], [4.0]]))
    assert ratio[0] > ratio[1] > ratio[2] > ratio[3] and ratio[0] > 1.5 and abs(ratio[3]) < 0.05


def test_kulsif_leave_one_out_equals_refitting_without_the_sample(monkeypatch):
    monkeypatch.setattr(density_ratio, "_BLOCK", 7)  # several kernel blocks, the last one short
    p, q = _gaussians()
    estimator = KuLSIF.fit(p[:40], q[:60], width=0.7)
    loo = estimator.leave_one_out()
    for j in (0, 17, 39):
        refit = KuLSIF.fit(np.delete(p[:40], j, axis=0), q[:60], width=0.7, lam=estimator.lam)
        assert loo[j] == pytest.approx(refit.ratio(p[j : j + 1])[0], rel=1e-9)


# -- Selective-FD's client selector ----------------------------------------------------------------
def test_density_ratio_selector_keeps_rows_near_the_private_classes():
    """Four 2-D blobs (classes 0-3) in the transfer set; the client holds classes 0 and 1."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    private = centres[rng.integers(0, 2, 100)] + rng.normal(0, 0.5, (100, 2))
    labels = rng.integers(0, 4, 200)
    transfer = centres[labels] + rng.normal(0, 0.5, (200, 2))
    as_images = [torch.tensor(x, dtype=torch.float32).view(len(x), 1, 1, 2) for x in (private, transfer)]
    mask = sfd.density_ratio_mask(*as_images, keep=0.75, width_factor=1.0)
    held = labels < 2
    assert mask[held].mean() > 0.6 and mask[~held].mean() < 0.05
    looser = sfd.density_ratio_mask(*as_images, keep=0.95, width_factor=1.0)
    assert looser.sum() > mask.sum() and (looser | ~mask).all()  # a higher keep share only adds rows


def test_selector_uploads_more_of_the_held_classes_on_a_real_federation():
    """digits, 3 clients, alpha 0.1: every client uploads a larger share of the transfer rows of
    the classes it trains on than of the others, and its precision beats uploading everything."""
    cfg = tiny_config(algorithm="selective-fd", alpha=0.1)
    scores = sfd.selector_scores(cfg)
    for pid, score in scores.items():
        data = client_data(cfg.data, cfg.run.seed, pid, 0.0)
        held = np.isin(data.transfer_y.numpy(), data.train_y.numpy())
        mask = sfd.client_mask(cfg, pid, data)
        assert 0 < held.sum() < len(held), pid  # the test needs label skew
        assert mask[held].mean() > mask[~held].mean() + 0.2, pid
        assert score.precision > held.mean() and score.recall == pytest.approx(mask[held].mean()), pid
        assert score.uploaded == pytest.approx(mask.mean()), pid


def test_selector_scores_golden(monkeypatch):
    """Transfer labels [0, 0, 1, 2], the client holds classes {0, 1}, uploads rows 0 and 3:
    precision 1/2 (row 3 is class 2), recall 1/3 (of rows 0, 1, 2), uploaded 2/4."""
    cfg = tiny_config(algorithm="selective-fd")
    real = client_data(cfg.data, cfg.run.seed, 0, 0.0)
    fake = type(real)(**{**real.__dict__, "transfer_y": torch.tensor([0, 0, 1, 2])})
    fake = type(real)(**{**fake.__dict__, "train_y": torch.tensor([0, 1, 1, 0])})
    monkeypatch.setattr(sfd, "client_data", lambda *args: fake)
    monkeypatch.setattr(sfd, "client_mask", lambda *args: np.array([True, False, False, True]))
    score = sfd.selector_scores(cfg)[0]
    assert (score.uploaded, score.precision, score.recall) == (0.5, 0.5, pytest.approx(1 / 3))


# -- KT-pFL's reference step -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "mean_abs, step",
    [(0.3, 0.04), (0.002, 5.0), (0.02, 1.0), (10.0, 0.0016), (0.0, 5.0**5)],
)
def test_ktpfl_adaptive_step_golden(mean_abs, step):
    """The reference loop by hand, e.g. 0.3: /5 -> 0.06 (0.2), /5 -> 0.012 (0.04), then /5 and
    back *5 three times: 0.04, a mean absolute step of 0.012."""
    assert adaptive_step_size(np.full(4, mean_abs)) == pytest.approx(step)


@pytest.mark.parametrize(
    "p0, c00",
    [(0.8, 1 / (1 + 4**-0.12)), (0.6, 0.6)],
)
def test_ktpfl_reference_step_golden(p0, c00):
    """Uniform 2 x 2 C, rho = 0, P = ((p0, 1 - p0), (1 - p0, p0)): the centred gradient of row 0
    is (-d, d), d = (p0 - 1/2) ln(p0 / (1 - p0)). p0 = 0.8: d = 0.3 ln 4 = 0.416 -> step 0.04, so
    c_00 - c_01 = 0.024 ln 4, and after softmax(5 c) c_00 = 1 / (1 + 4^-0.12). p0 = 0.6:
    d = 0.1 ln 1.5 = 0.041 -> step 1 (the uncentred gradient, about 1 per entry, would give 0.04),
    c_00 - c_01 = 0.2 ln 1.5, c_00 = 1 / (1 + 1.5^-1) = 0.6."""
    p = np.array([[[p0, 1 - p0]], [[1 - p0, p0]]])
    c = update_coefficients(np.full((2, 2), 0.5), p, FusionConfig(ktpfl_rho=0.0))
    assert c[0, 0] == pytest.approx(c00)
    np.testing.assert_allclose(c[1], c[0][::-1])
    np.testing.assert_allclose(c.sum(axis=1), 1.0)


def test_ktpfl_earlier_rule_stays_a_setting():
    p = np.array([[[0.8, 0.2]], [[0.2, 0.8]]])
    earlier = FusionConfig(ktpfl_rho=0.0, ktpfl_step_rule="fixed", ktpfl_simplex="projection")
    c = update_coefficients(np.full((2, 2), 0.5), p, earlier)
    assert c[0, 0] == pytest.approx(0.5 + 0.03 * math.log(4))  # step 0.1 (ktpfl-step-size), projection


# -- FedMD's transfer learning ---------------------------------------------------------------------
def test_fedmd_pretrains_on_the_transfer_set_and_fedmd_nopretrain_does_not():
    cfg = tiny_config(algorithm="fedmd", **{"fedmd-pretrain-epochs": 7})
    assert FUSIONS.get("fedmd").pretrain_epochs(cfg) == 7
    assert FUSIONS.get("fedmd-nopretrain").pretrain_epochs(cfg) == 0
    for name in FUSIONS.names():  # pretrain-epochs stays offered to every algorithm alike
        offered = cfg.with_overrides({"pretrain-epochs": 2})
        assert FUSIONS.get(name).pretrain_epochs(offered) == 2 + (7 if name == "fedmd" else 0), name
