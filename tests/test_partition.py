import numpy as np
import pytest

from fedkd.config import ConfigError, DataConfig
from fedkd.data.partition import class_histogram, federated_split, stratified_holdout
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
    pieces = [split.transfer, *split.client_train, *split.client_test, *split.client_val]
    everything = np.concatenate(pieces)
    assert len(everything) == len(np.unique(everything)) == len(digits.train_y)
    assert len(split.transfer) == 200
    assert all(len(v) > 0 for v in split.client_val)  # val-fraction 0.1 by default


def test_validation_split_comes_out_of_train_with_its_label_mix(digits):
    with_val = federated_split(digits.train_y, DataConfig(num_clients=5, alpha=0.3), 0)
    without = federated_split(digits.train_y, DataConfig(num_clients=5, alpha=0.3, val_fraction=0.0), 0)
    pieces = zip(with_val.client_train, with_val.client_val, without.client_train, strict=True)
    for train, val, whole in pieces:
        assert np.array_equal(np.sort(np.concatenate([train, val])), whole)  # carved out of train
        assert abs(len(val) - round(0.1 * len(whole))) <= 1
        assert set(np.unique(digits.train_y[val])) <= set(np.unique(digits.train_y[train]))
    assert all(len(v) == 0 for v in without.client_val)
    assert all(np.array_equal(a, b) for a, b in zip(with_val.client_test, without.client_test, strict=True))


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


PARTITIONERS_UNDER_TEST = [
    "iid",
    "dirichlet",
    "pathological",
    "shard",
    "quantity-linear",
    "quantity-lognormal",
]


@pytest.mark.parametrize("name", PARTITIONERS_UNDER_TEST)
def test_every_partitioner_is_reproducible_and_disjoint(digits, name):
    cfg = DataConfig(num_clients=6, partitioner=name, alpha=0.5, min_partition_size=5)
    a, b = federated_split(digits.train_y, cfg, 3), federated_split(digits.train_y, cfg, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a.client_train, b.client_train, strict=True))
    everything = np.concatenate([a.transfer, *a.client_train, *a.client_test])
    assert len(everything) == len(np.unique(everything))


def test_pathological_gives_each_client_k_classes(digits):
    cfg = DataConfig(num_clients=5, partitioner="pathological", classes_per_client=2)
    split = federated_split(digits.train_y, cfg, 0)
    hist = class_histogram(digits.train_y, split, 10)
    assert ((hist > 0).sum(axis=1) == 2).all()


def test_quantity_skew_sizes(digits):
    linear = federated_split(digits.train_y, DataConfig(num_clients=4, partitioner="quantity-linear"), 0)
    sizes = [len(t) for t in linear.client_train]
    assert sizes == sorted(sizes) and sizes[-1] > 3 * sizes[0]
    cfg = DataConfig(
        num_clients=8, partitioner="quantity-lognormal", quantity_sigma=1.5, min_partition_size=10
    )
    lognormal = federated_split(digits.train_y, cfg, 0)
    totals = [len(a) + len(b) for a, b in zip(lognormal.client_train, lognormal.client_test, strict=True)]
    assert min(totals) >= 10 and max(totals) > 3 * min(totals)


def test_local_test_split_follows_the_cap(digits):
    """The cap applies to the partition first; the local test split is cut from the capped
    partition, so it has the label mix the client trains on and no class it never trains on."""
    cfg = DataConfig(num_clients=4, alpha=0.3, max_client_samples=40, min_partition_size=60)
    capped = federated_split(digits.train_y, cfg, 0)
    full = federated_split(digits.train_y, DataConfig(num_clients=4, alpha=0.3, min_partition_size=60), 0)
    for pid in range(4):
        train, test, val = capped.client_train[pid], capped.client_test[pid], capped.client_val[pid]
        train = np.sort(np.concatenate([train, val]))  # the validation split comes out of the capped train
        whole = np.concatenate([full.client_train[pid], full.client_test[pid], full.client_val[pid]])
        assert len(train) == 40 and len(test) == 10  # 50 capped = 40 train + 20% test
        assert set(train) | set(test) <= set(whole) and not set(train) & set(test)
        assert set(digits.train_y[test]) <= set(digits.train_y[train])
        train_counts = np.bincount(digits.train_y[train], minlength=10)
        test_counts = np.bincount(digits.train_y[test], minlength=10)
        # every class holds out its 20% share of the capped partition, up to one sample of rounding
        assert np.abs(test_counts - 0.2 * (train_counts + test_counts)).max() <= 1.0


def test_stratified_holdout_takes_the_exact_share_and_never_a_class_s_last_sample():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1 + [3] * 10)
    keep, hold = stratified_holdout(np.arange(20), labels, 0.25, np.random.default_rng(0))
    assert len(hold) == 5 and len(keep) == 15
    assert set(labels[hold]) <= set(labels[keep]) and 2 in set(labels[keep])


def test_a_local_test_split_below_the_minimum_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="min-local-test-size=30"):
        federated_split(digits.train_y, DataConfig(num_clients=10, min_local_test_size=30), 0)


def test_transfer_set_from_another_dataset_leaves_the_whole_pool_to_clients(digits):
    cfg = DataConfig(num_clients=4, transfer_size=100, transfer_dataset="fashion-mnist")
    split = federated_split(digits.train_y, cfg, 0, external_transfer_pool=60000)
    client_side = np.concatenate([*split.client_train, *split.client_test, *split.client_val])
    assert len(client_side) == len(digits.train_y) == len(np.unique(client_side))
    assert len(split.transfer) == 100 and split.transfer.max() < 60000


def test_real_mnist_splits_are_reproducible(shared_data):
    mnist = load_dataset("mnist", str(shared_data))
    for cfg in [DataConfig(dataset="mnist", alpha=a) for a in (0.1, 0.5, 5.0)] + [
        DataConfig(dataset="mnist", partitioner="pathological", classes_per_client=2)
    ]:
        a, b = federated_split(mnist.train_y, cfg, 0), federated_split(mnist.train_y, cfg, 0)
        assert all(np.array_equal(x, y) for x, y in zip(a.client_train, b.client_train, strict=True))
        assert np.array_equal(a.transfer, b.transfer)


def test_transfer_dataset_must_match_input_shape(shared_data):
    from fedkd.data.federation import federation

    cfg = DataConfig(dataset="digits", transfer_dataset="mnist", data_dir=str(shared_data))
    with pytest.raises(ConfigError, match=r"transfer-dataset=mnist has inputs \(1, 28, 28\)"):
        federation(cfg, 0)


def test_a_class_given_to_no_client_is_warned_about(digits):
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("flwr.fedkd").addHandler(handler)
    try:
        cfg = DataConfig(
            num_clients=2, partitioner="pathological", classes_per_client=2, min_partition_size=2
        )
        split = federated_split(digits.train_y, cfg, 0)
    finally:
        logging.getLogger("flwr.fedkd").removeHandler(handler)
    covered = set(digits.train_y[np.concatenate(split.client_train + split.client_test)].tolist())
    assert len(covered) <= 4  # 2 clients x 2 classes
    assert any("to no client" in m for m in seen)
