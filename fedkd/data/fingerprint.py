"""A digest of the data a run trains and scores on: the dataset's arrays (and the transfer
source's) and the split drawn from them. Two runs with the same config but other files on disk
(a re-downloaded, repaired or damaged copy) get different fingerprints."""

from __future__ import annotations

import hashlib

import numpy as np

from fedkd.config import ExperimentConfig
from fedkd.data.federation import federation, transfer_source


def data_fingerprint(cfg: ExperimentConfig) -> str:
    """sha256 over the arrays and the split indices, in a fixed order (about 0.2 s for MNIST)."""
    dataset, split = federation(cfg.data, cfg.run.seed)
    digest = hashlib.sha256()

    def add(array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))

    external = cfg.data.transfer_dataset and cfg.data.transfer_dataset != cfg.data.dataset
    sources = [dataset, transfer_source(cfg.data)] if external else [dataset]
    for source in sources:
        for array in (source.train_x, source.train_y, source.test_x, source.test_y):
            add(array)
    for part in (split.transfer, *split.client_train, *split.client_test, *split.client_val):
        add(np.asarray(part))
    return f"sha256:{digest.hexdigest()[:16]}"
