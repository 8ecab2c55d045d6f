"""What one client sees, rebuilt deterministically from (config, partition id).

Clients never receive data over the wire: every process recomputes the same split from the
seed and caches it, so Ray workers, SuperNodes and the in-process engine agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from fedkd.config import ConfigError, DataConfig
from fedkd.data.partition import FederatedSplit, federated_split, stratified_holdout
from fedkd.data.sources import Dataset, load_dataset
from fedkd.seeding import numpy_rng


@dataclass(frozen=True)
class ClientData:
    train_x: torch.Tensor  # (N_k, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N_k,) int64
    test_x: torch.Tensor  # local test split, same label mix as train
    test_y: torch.Tensor
    guard_x: torch.Tensor  # knfu-guard's slice held out of train (empty unless asked for)
    guard_y: torch.Tensor
    val_x: torch.Tensor  # validation split, held out of the private train split (val-fraction)
    val_y: torch.Tensor
    matched_x: torch.Tensor  # (M, C, H, W): test-split sample with the train label mix (headline ALMA)
    matched_y: torch.Tensor
    transfer_x: torch.Tensor  # (N_t, C, H, W): shared public set
    transfer_y: torch.Tensor  # (N_t,): its labels, used only by pretrain-epochs
    global_x: torch.Tensor  # the dataset's test split
    global_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]


def normalise(images: np.ndarray, dataset: Dataset) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 standardised with the dataset's channel stats."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    mean = torch.tensor(dataset.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std.clamp_min(1e-6)


def transfer_source(cfg: DataConfig) -> Dataset:
    """The dataset the transfer set is drawn from (the clients' own one by default)."""
    return load_dataset(cfg.transfer_dataset or cfg.dataset, cfg.data_dir, cfg.download)


@lru_cache(maxsize=8)
def federation(cfg: DataConfig, seed: int) -> tuple[Dataset, FederatedSplit]:
    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    external = None
    if cfg.transfer_dataset and cfg.transfer_dataset != cfg.dataset:
        source = transfer_source(cfg)
        if source.input_shape != dataset.input_shape:
            raise ConfigError(
                f"transfer-dataset={cfg.transfer_dataset} has inputs {source.input_shape}, but "
                f"{cfg.dataset} has {dataset.input_shape}; allowed: a dataset of the same input shape"
            )
        external = len(source.train_y)
    return dataset, federated_split(dataset.train_y, cfg, seed, external)


@lru_cache(maxsize=8)
def _shared_tensors(cfg: DataConfig, seed: int) -> tuple[torch.Tensor, ...]:
    dataset, split = federation(cfg, seed)
    test = np.arange(len(dataset.test_y))
    if 0 < cfg.global_test_size < len(test):  # the same subset for every client and algorithm
        test = np.sort(numpy_rng(seed, "global-test").choice(test, cfg.global_test_size, replace=False))
    # transfer images are normalised with the clients' statistics: they are the clients' inputs
    return (
        normalise(transfer_source(cfg).train_x[split.transfer], dataset),
        torch.from_numpy(transfer_source(cfg).train_y[split.transfer]),
        normalise(dataset.test_x[test], dataset),
        torch.from_numpy(dataset.test_y[test]),
    )


def transfer_inputs(cfg: DataConfig, seed: int) -> torch.Tensor:
    """(N_t, C, H, W) the public transfer set's inputs, normalised as the clients see them (a
    server that distils, FedDF, needs them; never its labels)."""
    return _shared_tensors(cfg, seed)[0]


def matched_sample(
    train_labels: np.ndarray, test_labels: np.ndarray, size: int, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices into the test split: ``size`` samples whose class counts follow the training label
    mix (largest-remainder quotas, each capped by what the test split holds), drawn without
    replacement. A client's ALMA term on this sample has a binomial SE of about
    sqrt(a (1 - a) / size), where its own local test split holds a few dozen samples."""
    if size <= 0 or len(train_labels) == 0:
        return np.empty(0, dtype=np.int64)
    share = np.bincount(train_labels, minlength=num_classes) / len(train_labels)  # (C,)
    quota = share * size
    take = np.floor(quota).astype(int)
    for c in np.argsort(-(quota - take), kind="stable")[: size - int(take.sum())]:
        take[c] += 1
    picked = []
    for c in np.flatnonzero(take):
        members = np.flatnonzero(test_labels == c)
        picked.append(rng.choice(members, min(int(take[c]), len(members)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def client_data(cfg: DataConfig, seed: int, partition_id: int, guard_fraction: float = 0.0) -> ClientData:
    """One client's tensors; ``guard_fraction`` of its private train split is held out as the
    guard slice (``guard_x``, ``guard_y``) that knfu-guard judges a distillation on."""
    dataset, split = federation(cfg, seed)
    transfer_x, transfer_y, global_x, global_y = _shared_tensors(cfg, seed)
    train, test = split.client_train[partition_id], split.client_test[partition_id]
    val = split.client_val[partition_id] if split.client_val else np.empty(0, dtype=np.int64)
    matched = matched_sample(
        dataset.train_y[train],
        dataset.test_y,
        cfg.matched_test_size,
        dataset.num_classes,
        numpy_rng(seed, "matched-test", partition_id),
    )
    guard = np.empty(0, dtype=np.int64)
    if guard_fraction > 0:
        train, guard = stratified_holdout(
            train, dataset.train_y, guard_fraction, numpy_rng(seed, "guard", partition_id)
        )
    return ClientData(
        train_x=normalise(dataset.train_x[train], dataset),
        train_y=torch.from_numpy(dataset.train_y[train]),
        test_x=normalise(dataset.train_x[test], dataset),
        test_y=torch.from_numpy(dataset.train_y[test]),
        guard_x=normalise(dataset.train_x[guard], dataset),
        guard_y=torch.from_numpy(dataset.train_y[guard]),
        val_x=normalise(dataset.train_x[val], dataset),
        val_y=torch.from_numpy(dataset.train_y[val]),
        matched_x=normalise(dataset.test_x[matched], dataset),
        matched_y=torch.from_numpy(dataset.test_y[matched]),
        transfer_x=transfer_x,
        transfer_y=transfer_y,
        global_x=global_x,
        global_y=global_y,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
    )
