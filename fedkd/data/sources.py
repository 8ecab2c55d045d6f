"""Datasets, each registered in DATASETS as a DatasetSpec: a loader of uint8 images (N, C, H, W)
and integer labels with train/test splits, and what is known without loading (classes, image
shape, train size, class names). The shipped sources are registered here, a plugin's through the
fedkd.datasets entry points (fedkd/registry.py), and ``npz`` (your arrays) reads its spec from
its file (fedkd/data/npz.py).

``load_dataset(name, data_dir, download)`` is the one entry point to the data, ``dataset_spec``
to its facts. Files are looked up in the data directory (``data-dir`` / ``--data-dir``, else
``$FEDKD_DATA_DIR``) under the standard layouts; the Hugging Face hub is used only when
``download`` is set explicitly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedkd.config import DataConfig
from fedkd.data import cifar, hub, npz
from fedkd.data.errors import DataError
from fedkd.data.idx import has_idx_files, load_idx_split
from fedkd.data.integrity import EXPECTED, check_checksum, check_counts, check_labels
from fedkd.registry import Registry

DATA_DIR_ENV = "FEDKD_DATA_DIR"


@dataclass(frozen=True)
class Dataset:
    name: str  # as registered (DATASETS)
    train_x: np.ndarray  # (N_train, C, H, W) uint8
    train_y: np.ndarray  # (N_train,) int64
    test_x: np.ndarray  # (N_test, C, H, W) uint8
    test_y: np.ndarray  # (N_test,) int64
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of train_x / 255, for normalisation
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()  # what each label means (DatasetSpec)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


Split = cifar.Split  # images (N, C, H, W) uint8, labels (N,) integers
# (data folder or None, download) -> (train, test, what was read: named in every error);
# load_dataset checks the splits against the spec (make_dataset).
Loader = Callable[[Path | None, bool], tuple[Split, Split, str]]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and what is known without loading it (the server checks
    replies against these). A plugin registers one (docs/extending.md)."""

    load: Loader
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of every image
    train_size: int  # images in the train split: no client trains on more (bounds num-examples claims)
    class_names: tuple[str, ...] = ()  # what each label means, for figures and tables (empty: the label)
    hub: tuple[str, str] | None = None  # (repository, image column) on the Hugging Face hub (download=true)


SpecReader = Callable[[Path | None], DatasetSpec]  # a dataset whose facts are in its file (npz)
DATASETS: Registry[DatasetSpec | SpecReader] = Registry("dataset", plugins=DatasetSpec)


def dataset_spec(data: DataConfig) -> DatasetSpec:
    """What is known of the clients' dataset without training: its registered spec, or (npz) the
    one read from the file ``data-dir`` names."""
    return _spec(data.dataset, data.data_dir)


def _spec(name: str, data_dir: str) -> DatasetSpec:
    entry = DATASETS.get(name)
    return entry if isinstance(entry, DatasetSpec) else entry(resolve_data_dir(data_dir))


DIGITS = tuple(str(d) for d in range(10))  # digits and MNIST: the label is the digit itself
FASHION_NAMES = (
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
)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _builtin(
    name: str,
    input_shape: tuple[int, int, int],
    class_names: tuple[str, ...],
    hub: tuple[str, str] | None = None,
) -> Callable[[Loader], Loader]:
    """Register a shipped source, its class count and train size from its known per-class
    counts (fedkd/data/integrity.py)."""

    def register(load: Loader) -> Loader:
        counts = EXPECTED[name].train_counts
        DATASETS.register(name)(DatasetSpec(load, len(counts), input_shape, sum(counts), class_names, hub))
        return load

    return register


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
    name: str, train: Split, test: Split, origin: Path | str, spec: DatasetSpec | None = None
) -> Dataset:
    """A checked Dataset: types, shapes, label range and the per-class counts of ``name`` where
    they are known (fedkd/data/integrity.py), against ``spec`` (None: the one registered under
    ``name``); ``origin`` (the file or folder read) is named in every error."""
    spec = _spec(name, "") if spec is None else spec
    for split, (images, labels) in (("train", train), ("test", test)):
        if images.dtype != np.uint8 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{origin}: the {name} {split} split holds {images.dtype} images and {labels.dtype} "
                "labels; allowed: uint8 images (N, C, H, W) and integer labels"
            )
        if len(images) == 0:
            raise DataError(f"{origin}: the {name} {split} split holds no images")
        if len(images) != len(labels):
            raise DataError(
                f"{origin}: the {name} {split} split has {len(images)} images but {len(labels)} labels"
            )
        if images.shape[1:] != spec.input_shape:
            raise DataError(
                f"{origin}: {name} {split} images are {images.shape[1:]}; allowed: {spec.input_shape}"
            )
    if name in EXPECTED:
        check_counts(name, "train", train[1], origin)
        check_counts(name, "test", test[1], origin)
    else:
        for labels in (train[1], test[1]):
            check_labels(labels, spec.num_classes, origin)
        if len(train[1]) != spec.train_size:
            raise DataError(
                f"{origin}: the {name} train split holds {len(train[1])} images; "
                f"allowed: {spec.train_size} (its DatasetSpec's train_size)"
            )
    mean, std = channel_stats(train[0])
    train_y, test_y = train[1].astype(np.int64, copy=False), test[1].astype(np.int64, copy=False)
    return Dataset(name, train[0], train_y, test[0], test_y, spec.num_classes, mean, std, spec.class_names)


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


@_builtin("digits", (1, 8, 8), DIGITS)
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
    return (train_x, train_y), (test_x, test_y), "sklearn load_digits"


def _idx_loader(name: str, torchvision_name: str, system_dir: str | None) -> Loader:
    def load(root: Path | None, download: bool) -> tuple[Split, Split, str]:
        candidates = []
        if root is not None:
            candidates += [root / name, root / torchvision_name / "raw", root]
        if system_dir:
            candidates.append(Path(system_dir))
        for folder in candidates:
            if has_idx_files(folder):
                train, test = load_idx_split(folder, "train", name), load_idx_split(folder, "t10k", name)
                return train, test, str(folder)
        if download:
            return *hub.fetch(name, _hub_source(name)), f"the Hugging Face hub copy of {name}"
        raise _not_found(name, candidates, "train-images-idx3-ubyte.gz and the three other idx files")

    return load


def _hub_source(name: str) -> tuple[str, str]:
    source = _spec(name, "").hub
    if source is None:
        raise DataError(f"{name} has no Hugging Face hub copy; allowed: its files under data-dir")
    return source


_builtin("mnist", (1, 28, 28), DIGITS, ("ylecun/mnist", "image"))(_idx_loader("mnist", "MNIST", None))
_builtin("fashion-mnist", (1, 28, 28), FASHION_NAMES, ("zalando-datasets/fashion_mnist", "image"))(
    _idx_loader("fashion-mnist", "FashionMNIST", "/usr/share/datasets/fashion-mnist")
)


@_builtin("cifar10", (3, 32, 32), CIFAR10_NAMES, ("uoft-cs/cifar10", "img"))
def _load_cifar10(root: Path | None, download: bool) -> tuple[Split, Split, str]:
    looked: list[Path] = []
    for base in (root, root / "cifar10") if root is not None else ():
        pickles = base / "cifar-10-batches-py"
        looked.append(pickles)
        if pickles.is_dir():
            return *cifar.load_pickles(pickles), str(pickles)
    for base in (root / "cifar10-jpeg", root / "cifar10", root) if root is not None else ():
        archive = base / "cifar10-jpeg.tar.xz"
        looked.append(archive)
        if archive.is_file():
            return *cifar.load_jpeg_archive(archive), str(archive)
    if download:
        return *hub.fetch("cifar10", _hub_source("cifar10")), "the Hugging Face hub copy of cifar10"
    raise _not_found("cifar10", looked, "cifar-10-batches-py/ or cifar10-jpeg.tar.xz")


@DATASETS.register("npz")
def _npz_spec(root: Path | None) -> DatasetSpec:
    """Your own arrays: the .npz file ``data-dir`` names (fedkd/data/npz.py)."""
    path = npz.npz_path(root)
    stat = path.stat()
    return _read_npz_spec(path.resolve(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_npz_spec(path: Path, mtime_ns: int, size: int) -> DatasetSpec:
    """One version of the file, read once per process (every fact of the spec comes from it)."""
    data = npz.read_npz(path)
    train, test = data.train, data.test
    load = lambda root, download: (train, test, str(path))  # the arrays read above
    return DatasetSpec(load, data.num_classes, train[0].shape[1:], len(train[1]), data.class_names)


def load_dataset(name: str, data_dir: str = "", download: bool = False) -> Dataset:
    """Load a registered dataset; cached per process, so clients in one worker share it."""
    return _load_cached(name, resolve_data_dir(data_dir), download, _spec(name, data_dir))


@lru_cache(maxsize=4)
def _load_cached(name: str, root: Path | None, download: bool, spec: DatasetSpec) -> Dataset:
    return make_dataset(name, *spec.load(root, download), spec)


def clear_dataset_cache() -> None:
    """Forget loaded datasets (after files on disk changed)."""
    _load_cached.cache_clear()
    _read_npz_spec.cache_clear()
