"""Dataset loaders: each returns uint8 images (N, C, H, W) and int64 labels with train/test splits.

``load_dataset(name, data_dir, download)`` is the one entry point. Files are looked up in the
data directory (``data-dir`` / ``--data-dir``, else ``$FEDKD_DATA_DIR``) under the standard
layouts; the Hugging Face hub is used only when ``download`` is set explicitly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedkd.data import cifar, hub
from fedkd.data.errors import DataError
from fedkd.data.idx import has_idx_files, load_idx_split
from fedkd.data.integrity import EXPECTED, check_checksum, check_counts
from fedkd.registry import Registry

DATA_DIR_ENV = "FEDKD_DATA_DIR"


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


Loader = Callable[[Path | None, bool], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")

# Known without loading anything: the server validates replies against these.
NUM_CLASSES = {name: len(expected.train_counts) for name, expected in EXPECTED.items()}
INPUT_SHAPES = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
# Images in each train split: no client trains on more (the server's bound on num-examples claims).
TRAIN_SIZES = {name: sum(expected.train_counts) for name, expected in EXPECTED.items()}
# What each label means, for figures and tables (digits and MNIST: the digit itself).
CLASS_NAMES = {
    "digits": tuple(str(d) for d in range(10)),
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of uint8 images / 255 via 256-bin histograms (no float copy)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        mean = float((hist * levels).sum() / hist.sum())
        var = float((hist * (levels - mean) ** 2).sum() / hist.sum())
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def make_dataset(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], origin: Path | str
) -> Dataset:
    """A checked Dataset: shapes, label range and the registered per-class counts of ``name``
    (fedkd/data/integrity.py); ``origin`` (the file or folder read) is named in every error."""
    for split, (images, labels) in (("train", train), ("test", test)):
        if len(images) == 0:
            raise DataError(f"{origin}: the {name} {split} split holds no images")
        if len(images) != len(labels):
            raise DataError(
                f"{origin}: the {name} {split} split has {len(images)} images but {len(labels)} labels"
            )
        if images.shape[1:] != INPUT_SHAPES[name]:
            raise DataError(
                f"{origin}: {name} {split} images are {images.shape[1:]}; allowed: {INPUT_SHAPES[name]}"
            )
    check_counts(name, "train", train[1], origin)
    check_counts(name, "test", test[1], origin)
    mean, std = channel_stats(train[0])
    return Dataset(name, train[0], train[1], test[0], test[1], NUM_CLASSES[name], mean, std)


def resolve_data_dir(data_dir: str) -> Path | None:
    """The configured folder, else $FEDKD_DATA_DIR, else None."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV, "")
    return Path(chosen).expanduser() if chosen else None


def _not_found(name: str, looked: list[Path], files: str) -> DataError:
    where = ", ".join(str(p) for p in looked) or "nowhere (no --data-dir and no $FEDKD_DATA_DIR)"
    return DataError(
        f"{name} not found; looked in: {where}; put {files} in DIR/{name}/ and pass --data-dir DIR "
        f"(or set {DATA_DIR_ENV}), or pass --set download=true to fetch it from the Hugging Face hub"
    )


@DATASETS.register("digits")
def _load_digits(root: Path | None, download: bool) -> Dataset:
    """scikit-learn's 8x8 digits (ships with the package). Fixed 80/20 stratified split.

    The split has its own fixed seed, independent of the run seed, so the global test set is
    the same for every experiment, as it is for datasets with an official split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    check_checksum("digits", "load_digits", hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest())
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return make_dataset("digits", (train_x, train_y), (test_x, test_y), "sklearn load_digits")


def _idx_loader(name: str, torchvision_name: str, system_dir: str | None) -> Loader:
    def load(root: Path | None, download: bool) -> Dataset:
        candidates = []
        if root is not None:
            candidates += [root / name, root / torchvision_name / "raw", root]
        if system_dir:
            candidates.append(Path(system_dir))
        for folder in candidates:
            if has_idx_files(folder):
                train, test = load_idx_split(folder, "train", name), load_idx_split(folder, "t10k", name)
                return make_dataset(name, train, test, folder)
        if download:
            return make_dataset(name, *hub.fetch(name), f"the Hugging Face hub copy of {name}")
        raise _not_found(name, candidates, "train-images-idx3-ubyte.gz and the three other idx files")

    return load


DATASETS.register("mnist")(_idx_loader("mnist", "MNIST", None))
DATASETS.register("fashion-mnist")(
    _idx_loader("fashion-mnist", "FashionMNIST", "/usr/share/datasets/fashion-mnist")
)


@DATASETS.register("cifar10")
def _load_cifar10(root: Path | None, download: bool) -> Dataset:
    looked: list[Path] = []
    for base in (root, root / "cifar10") if root is not None else ():
        pickles = base / "cifar-10-batches-py"
        looked.append(pickles)
        if pickles.is_dir():
            return make_dataset("cifar10", *cifar.load_pickles(pickles), pickles)
    for base in (root / "cifar10-jpeg", root / "cifar10", root) if root is not None else ():
        archive = base / "cifar10-jpeg.tar.xz"
        looked.append(archive)
        if archive.is_file():
            return make_dataset("cifar10", *cifar.load_jpeg_archive(archive), archive)
    if download:
        return make_dataset("cifar10", *hub.fetch("cifar10"), "the Hugging Face hub copy of cifar10")
    raise _not_found("cifar10", looked, "cifar-10-batches-py/ or cifar10-jpeg.tar.xz")


def load_dataset(name: str, data_dir: str = "", download: bool = False) -> Dataset:
    """Load a registered dataset; cached per process, so clients in one worker share it."""
    loader = DATASETS.get(name)
    return _load_cached(name, resolve_data_dir(data_dir), download, loader)


@lru_cache(maxsize=4)
def _load_cached(name: str, root: Path | None, download: bool, loader: Loader) -> Dataset:
    return loader(root, download)


def clear_dataset_cache() -> None:
    """Forget loaded datasets (after files on disk changed)."""
    _load_cached.cache_clear()
