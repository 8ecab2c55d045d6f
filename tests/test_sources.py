"""Dataset loaders on the real offline copies, on the standard layouts, and on broken files."""

import gzip
import pickle
import shutil
import tarfile
from unittest.mock import patch

import numpy as np
import pytest
from PIL import Image

from fedkd.data import cifar
from fedkd.data.errors import DataError
from fedkd.data.integrity import EXPECTED, Expected
from fedkd.data.sources import DATASETS, clear_dataset_cache, load_dataset

MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_from_data_dir(shared_data):
    ds = load_dataset("mnist", str(shared_data))
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    assert np.bincount(ds.train_y).tolist() == MNIST_TRAIN_CLASS_COUNTS
    assert ds.mean[0] == pytest.approx(0.1307, abs=1e-4) and ds.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_data_dir_from_environment(shared_data, monkeypatch):
    monkeypatch.setenv("FEDKD_DATA_DIR", str(shared_data))
    assert load_dataset("fashion-mnist").train_x.shape == (60000, 1, 28, 28)


def test_torchvision_raw_layout_gives_the_same_arrays(shared_data, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / "mnist").iterdir():
        (raw / f.name).symlink_to(f)
    a, b = load_dataset("mnist", str(tmp_path)), load_dataset("mnist", str(shared_data))
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def _idx_folder(tmp_path, shared_data, mutate):
    folder = tmp_path / "mnist"
    folder.mkdir(parents=True)
    for f in (shared_data / "mnist").iterdir():
        (folder / f.name).symlink_to(f)
    mutate(folder)
    return tmp_path


def _replace(folder, name, data: bytes, compress=True):
    (folder / name).unlink()
    (folder / name).write_bytes(gzip.compress(data) if compress else data)


def test_truncated_gzip_names_the_file(tmp_path, shared_data):
    def truncate(folder):
        raw = (shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
        (folder / "t10k-images-idx3-ubyte.gz").unlink()
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])

    root = _idx_folder(tmp_path, shared_data, truncate)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot read .*corrupt or truncated"):
        load_dataset("mnist", str(root))


def test_label_count_mismatch_names_the_file(tmp_path, shared_data):
    def fewer_labels(folder):
        header = (2049).to_bytes(4, "big") + (9999).to_bytes(4, "big")
        _replace(folder, "t10k-labels-idx1-ubyte.gz", header + bytes(9999))

    root = _idx_folder(tmp_path, shared_data, fewer_labels)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: 9999 labels for 10000 images"):
        load_dataset("mnist", str(root))


def test_wrong_magic_and_short_payload_are_errors(tmp_path, shared_data):
    def bad_magic(folder):
        _replace(folder, "train-labels-idx1-ubyte.gz", (1234).to_bytes(4, "big") + bytes(12))

    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: not an idx file"):
        load_dataset("mnist", str(_idx_folder(tmp_path / "a", shared_data, bad_magic)))

    def short(folder):
        _replace(
            folder,
            "train-labels-idx1-ubyte.gz",
            (2049).to_bytes(4, "big") + (60000).to_bytes(4, "big") + bytes(10),
        )

    with pytest.raises(
        DataError, match=r"header says \(60000,\) \(60000 bytes\) but the file holds 10 bytes"
    ):
        load_dataset("mnist", str(_idx_folder(tmp_path / "b", shared_data, short)))


def test_missing_files_say_where_fedkd_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDKD_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", str(tmp_path))
    message = str(info.value)
    assert f"{tmp_path}/mnist" in message and "MNIST/raw" in message
    assert "--data-dir" in message and "download=true" in message and "\n" not in message
    with pytest.raises(DataError, match="no --data-dir and no"):
        load_dataset("cifar10", "")


@pytest.fixture
def synthetic_cifar(monkeypatch):
    """Tiny CIFAR-like copies: 2 images per class and no checksum (not the published copy)."""
    monkeypatch.setitem(EXPECTED, "cifar10", Expected((2,) * 10, (2,) * 10))


def _synthetic_cifar(n_per_class=2):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10 * n_per_class, 3, 32, 32), dtype=np.uint8)
    y = np.repeat(np.arange(10), n_per_class)
    return x, y


def test_cifar_pickles(tmp_path, monkeypatch):
    monkeypatch.setitem(EXPECTED, "cifar10", Expected((10,) * 10, (2,) * 10))  # 5 batches of 2 per class
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x, y = _synthetic_cifar()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": x.reshape(len(x), -1), b"labels": y.tolist()}, handle)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert np.array_equal(ds.test_x, x) and ds.num_classes == 10
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    clear_dataset_cache()
    with pytest.raises(DataError, match="data_batch_3: corrupt CIFAR-10 batch"):
        load_dataset("cifar10", str(tmp_path))


def _jpeg_archive(path, n_per_class=2):
    rng = np.random.default_rng(1)
    staging = path.parent / "staging"
    for split in ("train", "test"):
        for cls in cifar.CLASSES:
            (staging / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(staging / split / cls / f"{i:04d}.jpg", quality=95)
    with tarfile.open(path, "w:xz") as tar:
        tar.add(staging / "train", arcname="train")
        tar.add(staging / "test", arcname="test")


def test_cifar_jpeg_archive_is_decoded_once_then_cached_in_the_cache_folder(
    tmp_path, monkeypatch, synthetic_cifar
):
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "data" / "cifar10-jpeg"
    source.mkdir(parents=True)
    archive = source / "cifar10-jpeg.tar.xz"
    _jpeg_archive(archive)
    shutil.rmtree(source / "staging")
    before = sorted(p.name for p in (tmp_path / "data").rglob("*"))
    first = cifar.load_jpeg_archive(archive)
    assert len(list((tmp_path / "cache").glob("cifar10-jpeg-*.npz"))) == 1
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == before  # nothing in the data folder
    assert first[0][0].shape == (20, 3, 32, 32) and first[0][1].tolist() == sorted(first[0][1].tolist())
    with patch.object(cifar, "_decode_archive", side_effect=AssertionError("decoded again")):
        second = cifar.load_jpeg_archive(archive)  # from the cache
    assert np.array_equal(first[0][0], second[0][0]) and np.array_equal(first[1][1], second[1][1])
    archive.write_bytes(archive.read_bytes())  # same bytes, new mtime: the old cache is stale
    cifar.load_jpeg_archive(archive)
    assert len(list((tmp_path / "cache").glob("cifar10-jpeg-*.npz"))) == 2
    ds = load_dataset("cifar10", str(tmp_path / "data"))
    assert ds.train_x.shape == (20, 3, 32, 32)


def test_cache_folder_is_fedkd_cache_dir_else_xdg_else_home(tmp_path, monkeypatch):
    from fedkd.data.cache import cache_path, cache_root

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDKD_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "fedkd"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "fedkd"
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    source = tmp_path / "data" / "x.tar.xz"
    source.parent.mkdir()
    source.write_bytes(b"x")
    assert cache_path(source, "tag").parent == tmp_path / "mine"


def test_an_unwritable_cache_folder_costs_speed_not_the_load(tmp_path, monkeypatch, synthetic_cifar):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(blocker / "cache"))
    archive = tmp_path / "cifar10-jpeg.tar.xz"
    _jpeg_archive(archive)
    (train_x, _), _ = cifar.load_jpeg_archive(archive)
    assert train_x.shape == (20, 3, 32, 32)


def test_corrupt_cifar_archive_names_the_file(tmp_path, monkeypatch, synthetic_cifar):
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
    archive.parent.mkdir()
    _jpeg_archive(archive)
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(DataError, match="cifar10-jpeg.tar.xz: cannot read the archive"):
        cifar.load_jpeg_archive(archive)


@pytest.mark.slow
def test_real_cifar10_jpeg_copy(shared_data):
    ds = load_dataset("cifar10", str(shared_data))
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(ds.train_y).tolist() == [5000] * 10 and np.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.mean == pytest.approx((0.491, 0.482, 0.447), abs=0.01)


@pytest.mark.download
def test_hub_download(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(tmp_path))
    ds = load_dataset("mnist", str(tmp_path / "empty"), download=True)
    assert ds.train_x.shape == (60000, 1, 28, 28)
    assert np.bincount(ds.train_y).tolist() == MNIST_TRAIN_CLASS_COUNTS


class _Exploit:
    """A pickle that would run a command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickles_never_execute_code(tmp_path, synthetic_cifar):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x, y = _synthetic_cifar()
    marker = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {b"data": x.reshape(len(x), -1), b"labels": y.tolist(), b"x": _Exploit(marker)}, handle
            )
    clear_dataset_cache()
    with pytest.raises(DataError, match="refused global"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


def test_empty_or_mismatched_splits_are_data_errors():
    from fedkd.data.sources import make_dataset

    images = np.zeros((4, 1, 28, 28), dtype=np.uint8)
    labels = np.zeros(4, dtype=np.int64)
    with pytest.raises(DataError, match="train split holds no images"):
        make_dataset("mnist", (images[:0], labels[:0]), (images, labels), "here")
    with pytest.raises(DataError, match=r"here: mnist test images are \(1, 32, 32\); allowed: \(1, 28, 28\)"):
        make_dataset("mnist", (images, labels), (np.zeros((4, 1, 32, 32), dtype=np.uint8), labels), "here")


@pytest.mark.parametrize("damage", ["truncated", "empty", "not npz", "other keys", "other contents"])
def test_a_damaged_cache_of_any_kind_is_rebuilt_never_trusted(tmp_path, damage):
    from fedkd.data.cache import load_cached, save_cached

    arrays = {"train_x": np.arange(12, dtype=np.uint8).reshape(3, 4), "train_y": np.arange(3)}
    path = tmp_path / "c.npz"
    save_cached(path, arrays)
    loaded = load_cached(path)
    assert loaded is not None and all(np.array_equal(loaded[k], v) for k, v in arrays.items())
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not npz":
        path.write_text("hello")
    elif damage == "other keys":
        np.savez(path, something=np.zeros(3))
    else:  # random arrays under the right names, no valid checksum
        np.savez(path, train_x=np.ones((3, 4), dtype=np.uint8), train_y=np.arange(3))
    assert load_cached(path) is None


def test_the_hub_copy_is_the_one_the_datasets_spec_names(tmp_path, monkeypatch):
    """download=true asks the hub for the repository in the DatasetSpec (offline here: the fake
    hub refuses, and the refusal is one line naming that repository)."""
    import sys
    import types

    asked = []

    def refuse(repo):
        asked.append(repo)
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=refuse))
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(tmp_path))
    for name in ("mnist", "cifar10"):
        with pytest.raises(DataError, match=f"cannot download {DATASETS.get(name).hub[0]} from the"):
            load_dataset(name, str(tmp_path / "empty"), download=True)
    assert asked == ["ylecun/mnist", "uoft-cs/cifar10"]
