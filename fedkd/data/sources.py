"""Dataset loaders: each returns uint8 images (N, C, H, W) and int64 labels with train/test splits.

Loaders are registered by name in DATASETS; ``load_dataset`` is the one entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedkd.registry import Registry


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: np.ndarray  # (N_train, C, H, W) uint8
    train_y: np.ndarray  # (N_train,) int64
    test_x: np.ndarray  # (N_test, C, H, W) uint8
    test_y: np.ndarray  # (N_test,) int64
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of train_x / 255, for normalisation
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


DATASETS: Registry = Registry("dataset")


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scaled = x.astype(np.float64) / 255.0  # (N, C, H, W)
    mean = tuple(float(v) for v in scaled.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in scaled.std(axis=(0, 2, 3)))
    return mean, std


@DATASETS.register("digits")
def _load_digits(data_dir: str) -> Dataset:
    """scikit-learn's 8x8 digits (ships with the package). Fixed 80/20 stratified split.

    The split uses its own fixed seed, independent of the run seed, so that the global test
    set is the same for every experiment, as it is for datasets with an official split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    mean, std = _channel_stats(train_x)
    return Dataset("digits", train_x, train_y, test_x, test_y, 10, mean, std)


@lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "") -> Dataset:
    """Load a registered dataset (cached per process: clients in one worker share it)."""
    return DATASETS.get(name)(data_dir)
