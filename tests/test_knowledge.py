import math

import numpy as np
import pytest

from fedkd.knowledge import divergence_matrix, epd, simplex_violation, softmax

# Two clients, two transfer samples, two classes.
PREDS = np.array(
    [
        [[1.0, 0.0], [0.5, 0.5]],  # EPD [0.75, 0.25]
        [[0.0, 1.0], [0.5, 0.5]],  # EPD [0.25, 0.75]
    ]
)


def test_epd_is_mean_prediction():
    np.testing.assert_allclose(epd(PREDS), [[0.75, 0.25], [0.25, 0.75]])


def test_kl_golden_value():
    d = divergence_matrix(PREDS, "kl")
    assert d[0, 1] == pytest.approx(0.5 * math.log(3))
    assert d[1, 0] == pytest.approx(0.5 * math.log(3))
    assert d[0, 0] == 0.0 and d[1, 1] == 0.0


def test_js_golden_value_and_bound():
    d = divergence_matrix(PREDS, "js")
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert d[0, 1] == pytest.approx(expected)
    assert d[0, 1] <= math.log(2)


def test_cosine_golden_value():
    d = divergence_matrix(PREDS, "cosine")
    assert d[0, 1] == pytest.approx(2.0 / 3.0)


@pytest.mark.parametrize("name", ["kl", "js", "cosine"])
def test_divergences_are_permutation_equivariant(name):
    rng = np.random.default_rng(0)
    preds = softmax(rng.normal(size=(5, 20, 4)))
    perm = rng.permutation(5)
    d = divergence_matrix(preds, name)
    d_perm = divergence_matrix(preds[perm], name)
    np.testing.assert_allclose(d_perm, d[np.ix_(perm, perm)], atol=1e-12)
    assert (d >= -1e-12).all()


def test_kl_is_asymmetric_in_general():
    preds = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])
    d = divergence_matrix(preds, "kl")
    assert d[0, 1] != pytest.approx(d[1, 0])


def test_softmax_with_temperature_flattens():
    logits = np.array([[2.0, 0.0]])
    hot, soft = softmax(logits, 1.0), softmax(logits, 4.0)
    np.testing.assert_allclose(hot.sum(), 1.0)
    assert soft[0, 0] < hot[0, 0]
    assert hot[0, 0] == pytest.approx(1 / (1 + math.exp(-2)))


def test_simplex_violation_detects_bad_rows():
    assert simplex_violation(PREDS) == pytest.approx(0.0)
    assert simplex_violation(np.array([[0.7, 0.7]])) == pytest.approx(0.4)
    assert simplex_violation(np.array([[1.2, -0.2]])) == pytest.approx(0.2)
