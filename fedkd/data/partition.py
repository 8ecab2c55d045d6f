"""Private / transfer / test splits, with non-IID client partitions from flwr-datasets.

The train pool of a dataset is cut into: a transfer (public) set held out first, then K
client partitions made by a flwr-datasets partitioner on an index column. Each client
partition is cut again into a private train split and a local test split with the same
label distribution (that is what ALMA measures). Everything follows from the run seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedkd.config import ConfigError, DataConfig
from fedkd.registry import Registry
from fedkd.seeding import derive_seed, numpy_rng

PARTITIONERS: Registry[Callable[[DataConfig, int], object]] = Registry("partitioner")


@PARTITIONERS.register("iid")
def _iid(cfg: DataConfig, seed: int) -> object:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=cfg.num_clients)


@PARTITIONERS.register("dirichlet")
def _dirichlet(cfg: DataConfig, seed: int) -> object:
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


@dataclass(frozen=True)
class FederatedSplit:
    transfer: np.ndarray  # (N_t,) indices into the dataset's train arrays
    client_train: tuple[np.ndarray, ...]  # K arrays of train indices
    client_test: tuple[np.ndarray, ...]  # K arrays of local-test indices

    @property
    def num_clients(self) -> int:
        return len(self.client_train)


def _stratified_holdout(
    indices: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout), holding out ``fraction`` of every class."""
    keep, hold = [], []
    for cls in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == cls])
        n_hold = int(round(fraction * len(members)))
        hold.append(members[:n_hold])
        keep.append(members[n_hold:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


def federated_split(labels: np.ndarray, cfg: DataConfig, seed: int) -> FederatedSplit:
    """Cut a train pool (labels: (N,) int64) into transfer set and K client splits."""
    n = len(labels)
    pool_size = n - cfg.transfer_size
    if pool_size < cfg.num_clients * 2:
        raise ConfigError(
            f"num-clients={cfg.num_clients} is too many for {cfg.dataset}: {pool_size} "
            f"training samples remain after the transfer set; allowed: at most {pool_size // 2}"
        )
    order = numpy_rng(seed, "transfer").permutation(n)
    transfer = np.sort(order[: cfg.transfer_size])
    pool = np.sort(order[cfg.transfer_size :])

    partitions = _partition_pool(pool, labels, cfg, seed)
    client_train, client_test = [], []
    for pid, part in enumerate(partitions):
        train, test = _stratified_holdout(
            part, labels, cfg.local_test_fraction, numpy_rng(seed, "local-test", pid)
        )
        client_train.append(train)
        client_test.append(test)
    return FederatedSplit(transfer, tuple(client_train), tuple(client_test))


def _partition_pool(pool: np.ndarray, labels: np.ndarray, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    from datasets import Dataset as HFDataset

    partitioner = PARTITIONERS.get(cfg.partitioner)(cfg, derive_seed(seed, "partition"))
    partitioner.dataset = HFDataset.from_dict({"index": pool, "label": labels[pool]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parts = [
                np.asarray(partitioner.load_partition(pid)["index"], dtype=np.int64)
                for pid in range(cfg.num_clients)
            ]
    except ValueError as exc:
        raise ConfigError(
            f"cannot split {len(pool)} samples into {cfg.num_clients} {cfg.partitioner} "
            f"partitions (alpha={cfg.alpha}, min-partition-size={cfg.min_partition_size}): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    empty = [pid for pid, p in enumerate(parts) if len(p) < 2]
    if empty:
        raise ConfigError(f"partition {empty[0]} has fewer than 2 samples; raise alpha or min-partition-size")
    return parts


def class_histogram(labels: np.ndarray, split: FederatedSplit, num_classes: int) -> np.ndarray:
    """(K, C) count of each class in each client's private train split."""
    return np.stack([np.bincount(labels[idx], minlength=num_classes) for idx in split.client_train])
