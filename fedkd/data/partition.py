"""Private / transfer / test splits, with non-IID client partitions from flwr-datasets.

The transfer (public) set is held out of the train pool first, or drawn from another dataset
of the same input shape. The rest of the pool is cut into K client partitions by a
flwr-datasets partitioner on an index column. Each client partition is cut again into a
private train split and a local test split with the same label distribution (that is what
ALMA measures). A cap on private data applies to the partition before that cut, so the local test
split always follows the capped label mix. A validation split (``val-fraction``) is then held out
of the capped train split, stratified, so tuning never looks at a test split. All from the seed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedkd.config import ConfigError, DataConfig
from fedkd.registry import Registry
from fedkd.seeding import derive_seed, numpy_rng

log = logging.getLogger("flwr.fedkd")

PartitionerFactory = Callable[[DataConfig, int, int], object]  # (cfg, seed, pool size)
PARTITIONERS: Registry[PartitionerFactory] = Registry("partitioner")


@PARTITIONERS.register("iid")
def _iid(cfg: DataConfig, seed: int, pool_size: int) -> object:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=cfg.num_clients)


@PARTITIONERS.register("dirichlet")
def _dirichlet(cfg: DataConfig, seed: int, pool_size: int) -> object:
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=cfg.num_clients,
        partition_by="label",
        alpha=cfg.alpha,
        min_partition_size=cfg.min_partition_size,
        self_balancing=False,
        shuffle=True,
        seed=seed,
    )


@PARTITIONERS.register("pathological")
def _pathological(cfg: DataConfig, seed: int, pool_size: int) -> object:
    from flwr_datasets.partitioner import PathologicalPartitioner

    return PathologicalPartitioner(
        num_partitions=cfg.num_clients,
        partition_by="label",
        num_classes_per_partition=cfg.classes_per_client,
        class_assignment_mode="random",
        shuffle=True,
        seed=seed,
    )


@PARTITIONERS.register("shard")
def _shard(cfg: DataConfig, seed: int, pool_size: int) -> object:
    from flwr_datasets.partitioner import ShardPartitioner

    most = pool_size // cfg.num_clients  # every shard needs a sample (else flwr-datasets divides by 0)
    if cfg.shards_per_client > most:
        raise ConfigError(
            f"shards-per-client={cfg.shards_per_client} is too many for {cfg.num_clients} clients and "
            f"{pool_size} pool samples; allowed: 1..{most}"
        )
    return ShardPartitioner(
        num_partitions=cfg.num_clients,
        partition_by="label",
        num_shards_per_partition=cfg.shards_per_client,
        shuffle=True,
        seed=seed,
    )


@PARTITIONERS.register("quantity-linear")
def _quantity_linear(cfg: DataConfig, seed: int, pool_size: int) -> object:
    from flwr_datasets.partitioner import LinearPartitioner

    return LinearPartitioner(num_partitions=cfg.num_clients)  # size of client k ~ k + 1


@PARTITIONERS.register("quantity-lognormal")
def _quantity_lognormal(cfg: DataConfig, seed: int, pool_size: int) -> object:
    from flwr_datasets.partitioner import SizePartitioner

    return SizePartitioner(lognormal_sizes(cfg, pool_size, seed))


def lognormal_sizes(cfg: DataConfig, pool_size: int, seed: int) -> list[int]:
    """Client sizes ~ LogNormal(0, sigma), scaled to the pool, each >= min-partition-size."""
    k, floor = cfg.num_clients, cfg.min_partition_size
    if k * floor > pool_size:
        raise ConfigError(
            f"num-clients={k} x min-partition-size={floor} exceeds the {pool_size} pool samples"
        )
    with np.errstate(over="ignore"):
        weights = numpy_rng(seed, "sizes").lognormal(0.0, cfg.quantity_sigma, size=k)
        total = weights.sum()
    if not np.isfinite(total):
        raise ConfigError(
            f"quantity-sigma={cfg.quantity_sigma} is too large: client sizes exp(sigma z) overflow for "
            f"{k} clients; allowed: a smaller quantity-sigma (sizes this skewed leave clients empty anyway)"
        )
    extra = np.floor(weights / total * (pool_size - k * floor)).astype(int)
    return [int(floor + e) for e in extra]


@dataclass(frozen=True)
class FederatedSplit:
    transfer: np.ndarray  # (N_t,) indices into the transfer source's train arrays
    client_train: tuple[np.ndarray, ...]  # K arrays of train indices
    client_test: tuple[np.ndarray, ...]  # K arrays of local-test indices
    client_val: tuple[np.ndarray, ...] = ()  # K arrays of validation indices (held out of train)


def stratified_holdout(
    indices: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout) with ``round(fraction * n)`` held out, spread over the
    classes in proportion to their counts (largest remainder), so both sides share one label
    mix. A class never gives up its last sample: every held-out class is also kept."""
    classes, counts = np.unique(labels[indices], return_counts=True)
    quota = fraction * counts  # (classes,) ideal hold-out per class
    take = np.minimum(np.floor(quota).astype(int), counts - 1)
    room = counts - 1 - take  # samples each class can still give
    order = np.argsort(-(quota - take), kind="stable")  # largest remainder first
    missing = int(round(fraction * len(indices))) - int(take.sum())
    for c in order:
        if missing <= 0:
            break
        if room[c] > 0:
            take[c] += 1
            missing -= 1
    keep, hold = [], []
    for cls, n_hold in zip(classes, take, strict=True):
        members = rng.permutation(indices[labels[indices] == cls])
        hold.append(members[:n_hold])
        keep.append(members[n_hold:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


def capped_partition(part: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """Cap a client's partition *before* the local test split is cut from it, so train and
    test keep one label mix: ``max-client-samples`` private train samples plus their share of
    test samples (``local-test-fraction`` of the capped partition)."""
    if cfg.max_client_samples <= 0:
        return part
    total = int(np.ceil(cfg.max_client_samples / (1.0 - cfg.local_test_fraction)))
    if len(part) <= total:
        return part
    return np.sort(rng.choice(part, total, replace=False))


def federated_split(
    labels: np.ndarray, cfg: DataConfig, seed: int, external_transfer_pool: int | None = None
) -> FederatedSplit:
    """Cut a train pool (labels: (N,) int64) into transfer set and K client splits.

    ``external_transfer_pool``: size of another dataset's train set to draw the transfer set
    from; then all of ``labels`` stays available to clients.
    """
    n = len(labels)
    if external_transfer_pool is None:
        if cfg.transfer_size > n - 4:  # two clients of two samples each must remain
            raise ConfigError(
                f"transfer-size={cfg.transfer_size} leaves too little of the {n} {cfg.dataset} training "
                f"samples for any federation; allowed: at most {max(0, n - 2 * cfg.num_clients)}"
            )
        order = numpy_rng(seed, "transfer").permutation(n)
        transfer, pool = np.sort(order[: cfg.transfer_size]), order[cfg.transfer_size :]
    else:
        if cfg.transfer_size > external_transfer_pool:
            raise ConfigError(
                f"transfer-size={cfg.transfer_size} exceeds the {external_transfer_pool} samples of "
                f"transfer-dataset={cfg.transfer_dataset}"
            )
        transfer = np.sort(
            numpy_rng(seed, "transfer").choice(external_transfer_pool, cfg.transfer_size, replace=False)
        )
        pool = numpy_rng(seed, "pool-order").permutation(n)
    if len(pool) < cfg.num_clients * 2:
        raise ConfigError(
            f"num-clients={cfg.num_clients} is too many for {cfg.dataset}: {len(pool)} training samples "
            f"remain after the transfer set; allowed: at most {len(pool) // 2}"
        )
    client_train, client_test, client_val = [], [], []
    for pid, part in enumerate(_partition_pool(pool, labels, cfg, seed)):
        part = capped_partition(part, cfg, numpy_rng(seed, "cap", pid))
        train, test = stratified_holdout(
            part, labels, cfg.local_test_fraction, numpy_rng(seed, "local-test", pid)
        )
        if 0 < cfg.max_client_samples < len(train):  # rounding: at most a sample or two over
            train = np.sort(
                numpy_rng(seed, "cap-trim", pid).choice(train, cfg.max_client_samples, replace=False)
            )
        if len(test) < cfg.min_local_test_size:
            raise ConfigError(
                f"client {pid}'s local test split holds {len(test)} samples (its partition: {len(part)}), "
                f"below min-local-test-size={cfg.min_local_test_size}; allowed: raise min-partition-size "
                "or local-test-fraction, use fewer clients or a larger alpha, or lower min-local-test-size"
            )
        val = np.empty(0, dtype=train.dtype)
        if cfg.val_fraction > 0:  # validation comes out of the capped train split: it costs data
            train, val = stratified_holdout(train, labels, cfg.val_fraction, numpy_rng(seed, "val", pid))
        client_train.append(train)
        client_test.append(test)
        client_val.append(val)
    return FederatedSplit(transfer, tuple(client_train), tuple(client_test), tuple(client_val))


def _columnar_dataset(columns: dict[str, np.ndarray]):
    """A Hugging Face Dataset whose ``ds["col"]`` is a numpy array read through Arrow.

    datasets 4 returns a lazy Column that numpy converts row by row: ~10 s for MNIST's 60k labels
    inside flwr-datasets' partitioners, versus milliseconds through Arrow.
    """
    from datasets import Dataset as HFDataset

    class ColumnarDataset(HFDataset):
        def __getitem__(self, key):  # noqa: ANN001, ANN204 - same signature as the base class
            return arrow_column(self, key) if isinstance(key, str) else super().__getitem__(key)

    return ColumnarDataset.from_dict(columns)


def arrow_column(dataset, key: str) -> np.ndarray:
    """One column of a (possibly select()ed) Hugging Face Dataset as numpy, via Arrow."""
    column = dataset.data.column(key)
    indices = getattr(dataset, "_indices", None)  # the row mapping of a select()ed view
    if indices is not None:
        column = column.take(indices.column(0))
    return column.to_numpy()


def _partition_pool(pool: np.ndarray, labels: np.ndarray, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    partitioner = PARTITIONERS.get(cfg.partitioner)(cfg, derive_seed(seed, "partition"), len(pool))
    partitioner.dataset = _columnar_dataset({"index": pool, "label": labels[pool]})
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            parts = [
                arrow_column(partitioner.load_partition(pid), "index").astype(np.int64)
                for pid in range(cfg.num_clients)
            ]
    except ValueError as exc:
        raise ConfigError(
            f"cannot split {len(pool)} samples into {cfg.num_clients} {cfg.partitioner} partitions "
            f"(alpha={cfg.alpha}, min-partition-size={cfg.min_partition_size}): {str(exc).splitlines()[0]}"
        ) from None
    resampled = sum("min_partition_size" in str(w.message) for w in caught)
    if resampled:
        log.warning(
            "dirichlet alpha=%s: resampled %d times to give every client >= %d samples",
            cfg.alpha,
            resampled,
            cfg.min_partition_size,
        )
    small = [pid for pid, p in enumerate(parts) if len(p) < 2]
    if small:
        raise ConfigError(
            f"{cfg.partitioner} partition {small[0]} has {len(parts[small[0]])} samples (< 2); "
            "use fewer clients, a larger alpha or another partitioner"
        )
    unassigned = sorted(set(labels[pool].tolist()) - set(labels[np.concatenate(parts)].tolist()))
    if unassigned:
        log.warning(
            "%s partitioner gave classes %s to no client: no client can learn them",
            cfg.partitioner,
            unassigned,
        )
    return parts


def class_histogram(labels: np.ndarray, split: FederatedSplit, num_classes: int) -> np.ndarray:
    """(K, C) count of each class in each client's private train split."""
    return np.stack([np.bincount(labels[idx], minlength=num_classes) for idx in split.client_train])
