import numpy as np
import pytest

from fedkd.config import ConfigError, DataConfig
from fedkd.data.partition import class_histogram, federated_split
from fedkd.data.sources import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_loader_shapes_and_types(digits):
    assert digits.train_x.dtype == np.uint8 and digits.train_x.shape[1:] == (1, 8, 8)
    assert digits.train_y.dtype == np.int64
    assert len(digits.train_x) + len(digits.test_x) == 1797
    assert set(np.unique(digits.test_y)) == set(range(10))


def test_splits_are_disjoint_and_cover_the_pool(digits):
    cfg = DataConfig(num_clients=10, alpha=0.5, transfer_size=200)
    split = federated_split(digits.train_y, cfg, seed=0)
    pieces = [split.transfer, *split.client_train, *split.client_test]
    everything = np.concatenate(pieces)
    assert len(everything) == len(np.unique(everything)) == len(digits.train_y)
    assert len(split.transfer) == 200


def test_same_seed_same_split_other_seed_other_split(digits):
    cfg = DataConfig(num_clients=5, alpha=0.3)
    a, b = federated_split(digits.train_y, cfg, 7), federated_split(digits.train_y, cfg, 7)
    c = federated_split(digits.train_y, cfg, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a.client_train, b.client_train, strict=True))
    assert np.array_equal(a.transfer, b.transfer)
    assert not all(np.array_equal(x, y) for x, y in zip(a.client_train, c.client_train, strict=True))


def test_local_test_split_follows_client_label_mix(digits):
    cfg = DataConfig(num_clients=5, alpha=0.3)
    split = federated_split(digits.train_y, cfg, 0)
    for train, test in zip(split.client_train, split.client_test, strict=True):
        assert set(np.unique(digits.train_y[test])) <= set(np.unique(digits.train_y[train]))
        assert 0.1 < len(test) / (len(train) + len(test)) < 0.3


def test_small_alpha_is_more_skewed_than_large_alpha(digits):
    def skew(alpha):
        split = federated_split(
            digits.train_y, DataConfig(num_clients=8, alpha=alpha, min_partition_size=5), 0
        )
        hist = class_histogram(digits.train_y, split, 10).astype(float)
        frac = hist / hist.sum(axis=1, keepdims=True)
        return float(frac.max(axis=1).mean())

    assert skew(0.1) > skew(100.0) + 0.2


def test_iid_partition_is_balanced(digits):
    split = federated_split(digits.train_y, DataConfig(num_clients=4, partitioner="iid"), 0)
    sizes = [len(a) + len(b) for a, b in zip(split.client_train, split.client_test, strict=True)]
    assert max(sizes) - min(sizes) <= 1


def test_too_many_clients_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="num-clients=1000 is too many for digits"):
        federated_split(digits.train_y, DataConfig(num_clients=1000), 0)


def test_impossible_dirichlet_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="cannot split .* dirichlet partitions"):
        federated_split(digits.train_y, DataConfig(num_clients=100, alpha=0.01, min_partition_size=10), 0)
