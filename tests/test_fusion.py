import math

import numpy as np
import pytest

from fedkd.config import FusionConfig
from fedkd.fusion import FUSIONS
from fedkd.fusion.knfu import neighbour_mask, neighbour_weights
from fedkd.knowledge import softmax

D = np.array([[0.0, 0.1, 0.5], [0.1, 0.0, 0.3], [0.5, 0.3, 0.0]])


def random_preds(k=5, n=30, c=4, seed=0):
    return softmax(np.random.default_rng(seed).normal(size=(k, n, c)) * 2)


def test_mean_threshold_neighbours_golden():
    mask = neighbour_mask(D, FusionConfig(neighbour_rule="mean-threshold", include_self=True))
    # row means over the others: 0.3, 0.2, 0.4
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, True, True]]


def test_top_m_and_fixed_threshold_neighbours_golden():
    top1 = neighbour_mask(D, FusionConfig(neighbour_rule="top-m", neighbour_top_m=1, include_self=False))
    assert top1.tolist() == [[False, True, False], [True, False, False], [False, True, False]]
    fixed = neighbour_mask(
        D, FusionConfig(neighbour_rule="fixed-threshold", neighbour_threshold=0.2, include_self=False)
    )
    assert fixed.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_weights_golden_softmax_of_minus_beta_d():
    mask = neighbour_mask(D, FusionConfig(include_self=True))
    w = neighbour_weights(D, mask, beta=10.0)
    e = math.exp(-1.0)  # beta * d = 10 * 0.1
    np.testing.assert_allclose(w[0], [1 / (1 + e), e / (1 + e), 0.0])
    np.testing.assert_allclose(w[2], [0.0, math.exp(-3) / (1 + math.exp(-3)), 1 / (1 + math.exp(-3))])


def test_client_without_neighbours_learns_locally():
    cfg = FusionConfig(neighbour_rule="fixed-threshold", neighbour_threshold=0.2, include_self=False)
    preds = random_preds(k=3)
    knfu = FUSIONS.get("knfu")
    mask = neighbour_mask(D, cfg)
    w = neighbour_weights(D, mask, 10.0)
    np.testing.assert_allclose(w[2], [0.0, 0.0, 1.0])
    # through fuse(): a client far from everyone gets no target
    far = preds.copy()
    far[2] = np.tile(np.eye(4)[3] * 0.97 + 0.01, (30, 1))
    result = knfu.fuse(far, FusionConfig(neighbour_rule="fixed-threshold", neighbour_threshold=0.05))
    assert result.targets[2] is None


@pytest.mark.parametrize("name", ["fedmd", "knfu"])
@pytest.mark.parametrize("rule", ["mean-threshold", "top-m", "fixed-threshold"])
def test_targets_on_simplex_and_weight_rows_sum_to_one(name, rule):
    cfg = FusionConfig(neighbour_rule=rule, neighbour_threshold=0.5)
    result = FUSIONS.get(name).fuse(random_preds(), cfg)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0)
    assert (result.weights >= 0).all()
    for target in result.targets:
        if target is not None:
            np.testing.assert_allclose(target.sum(axis=1), 1.0)
            assert (target >= 0).all()


@pytest.mark.parametrize("divergence", ["kl", "js", "cosine"])
def test_knfu_is_permutation_equivariant(divergence):
    preds = random_preds(k=6, seed=3)
    perm = np.random.default_rng(1).permutation(6)
    cfg = FusionConfig(divergence=divergence)
    base = FUSIONS.get("knfu").fuse(preds, cfg)
    permuted = FUSIONS.get("knfu").fuse(preds[perm], cfg)
    np.testing.assert_allclose(permuted.weights, base.weights[np.ix_(perm, perm)], atol=1e-12)
    for new_k, old_k in enumerate(perm):
        if base.targets[old_k] is None:
            assert permuted.targets[new_k] is None
        else:
            np.testing.assert_allclose(permuted.targets[new_k], base.targets[old_k], atol=1e-12)


def test_knfu_target_is_weighted_sum_of_neighbour_predictions():
    preds = random_preds(k=4)
    result = FUSIONS.get("knfu").fuse(preds, FusionConfig())
    for k, target in enumerate(result.targets):
        if target is not None:
            np.testing.assert_allclose(target, np.einsum("j,jnc->nc", result.weights[k], preds))


def test_fedmd_consensus_is_the_mean_of_class_scores_for_everyone():
    """FedMD averages logits: from predictions softmax(z_k / T) the target is softmax(mean z / T)."""
    logits = np.random.default_rng(3).normal(size=(3, 5, 4)) * 4  # (K, N, C) class scores
    preds = softmax(logits, 3.0)
    result = FUSIONS.get("fedmd").fuse(preds, FusionConfig())
    for target in result.targets:
        np.testing.assert_allclose(target, softmax(logits.mean(axis=0), 3.0), atol=1e-12)
        assert not np.allclose(target, preds.mean(axis=0))  # not the arithmetic mean of probabilities
    np.testing.assert_allclose(result.weights, np.full((3, 3), 1 / 3))


def test_local_exchanges_nothing():
    local = FUSIONS.get("local")
    assert local.uploads == "nothing"
    result = local.fuse(np.zeros((4, 0, 10)), FusionConfig())
    assert result.targets == [None] * 4
    np.testing.assert_array_equal(result.weights, np.eye(4))


def test_knfu_neighbours_are_clients_that_share_classes():
    """Pathological split: clients 0,1 know classes {0,1}; clients 2,3 know {2,3}."""
    rng = np.random.default_rng(0)

    def confident_on(classes):
        logits = rng.normal(scale=0.3, size=(50, 4))
        logits[:, classes] += rng.choice([0.0, 4.0], size=(50, 1)) + np.array([4.0, 0.0])[None, :]
        return softmax(logits)

    preds = np.stack([confident_on([0, 1]), confident_on([0, 1]), confident_on([2, 3]), confident_on([2, 3])])
    result = FUSIONS.get("knfu").fuse(preds, FusionConfig())
    w = result.weights
    assert w[0, 1] > 0 and w[1, 0] > 0 and w[2, 3] > 0 and w[3, 2] > 0
    assert w[0, 2] == w[0, 3] == w[1, 2] == w[1, 3] == 0.0
    assert w[2, 0] == w[2, 1] == w[3, 0] == w[3, 1] == 0.0
