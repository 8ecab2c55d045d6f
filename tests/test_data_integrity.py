"""Damaged copies of every source are errors naming the file, never a smaller (or cached) dataset."""

import gzip
import pickle
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fedkd.data import cifar
from fedkd.data.errors import DataError
from fedkd.data.integrity import EXPECTED, Expected
from fedkd.data.sources import DATASETS, clear_dataset_cache, load_dataset

SIZES = {  # the published split sizes
    "digits": (1437, 360),
    "mnist": (60000, 10000),
    "fashion-mnist": (60000, 10000),
    "cifar10": (50000, 10000),
}


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKD_CACHE_DIR", str(tmp_path / "cache"))
    clear_dataset_cache()
    yield
    clear_dataset_cache()


def _synthetic_cifar_expected(monkeypatch, per_class=2):
    """Tiny CIFAR-like copies: their own counts and no checksum (they are not the published copy)."""
    monkeypatch.setitem(EXPECTED, "cifar10", Expected((per_class,) * 10, (per_class,) * 10))


def test_every_source_registers_its_split_sizes_and_classes():
    assert set(EXPECTED) == set(DATASETS.names()) - {"npz"} == set(SIZES)  # npz: facts in its file
    for name, (train, test) in SIZES.items():
        assert (sum(EXPECTED[name].train_counts), sum(EXPECTED[name].test_counts)) == (train, test)
        assert DATASETS.get(name).num_classes == len(EXPECTED[name].test_counts) == 10


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(SIZES)),
    split=st.sampled_from(["train", "test"]),
    cls=st.integers(0, 9),
    delta=st.integers(-3, 3).filter(bool),
)
def test_any_class_count_off_is_an_error_naming_the_origin(name, split, cls, delta):
    from fedkd.data.sources import make_dataset

    def arrays(counts):
        labels = np.repeat(np.arange(10), counts)
        shape = DATASETS.get(name).input_shape
        images = np.broadcast_to(np.zeros(shape, np.uint8), (len(labels), *shape))
        return images, labels

    counts = {"train": list(EXPECTED[name].train_counts), "test": list(EXPECTED[name].test_counts)}
    counts[split][cls] += delta
    with pytest.raises(DataError, match=rf"^/data/{name}: the {name} {split} split holds .* of class {cls}"):
        make_dataset(name, arrays(counts["train"]), arrays(counts["test"]), f"/data/{name}")


def _copy_archive(shared_data, tmp_path):
    archive = tmp_path / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
    archive.parent.mkdir()
    archive.write_bytes((shared_data / "cifar10-jpeg" / "cifar10-jpeg.tar.xz").read_bytes())
    return archive


@pytest.mark.parametrize("damage", ["4 kB flipped at 92 %", "truncated at 60 %", "one byte flipped"])
def test_a_damaged_cifar_archive_is_an_error_and_never_cached(tmp_path, shared_data, damage):
    archive = _copy_archive(shared_data, tmp_path)
    raw = bytearray(archive.read_bytes())
    if damage.startswith("4 kB"):
        at = int(len(raw) * 0.92)
        raw[at : at + 4096] = bytes(b ^ 0xFF for b in raw[at : at + 4096])
    elif damage.startswith("truncated"):
        raw = raw[: int(len(raw) * 0.6)]
    else:
        raw[len(raw) // 3] ^= 0x01
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"^{archive}: sha256 .* differs from the known cifar10 copy"):
        load_dataset("cifar10", str(tmp_path))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def _jpeg_archive(path, per_class, test_classes=range(10)):
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:xz") as tar:
        for split, classes in (("train", range(10)), ("test", test_classes)):
            for c in classes:
                for i in range(per_class):
                    jpg = path.parent / f"{split}-{c}-{i}.jpg"
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(jpg)
                    tar.add(jpg, arcname=f"{split}/{cifar.CLASSES[c]}/{i:04d}.jpg")


def test_an_archive_that_ends_early_is_an_error_and_never_cached(tmp_path, monkeypatch):
    """tarfile stops quietly at a damaged header: only the per-class counts notice the rest is gone."""
    _synthetic_cifar_expected(monkeypatch)
    archive = tmp_path / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
    archive.parent.mkdir()
    _jpeg_archive(archive, 2, test_classes=(0, 1, 2, 5, 6, 8))  # classes 3, 4, 7, 9 lost
    with pytest.raises(
        DataError, match=rf"^{archive}: the cifar10 test split holds 12 images \(0 of class 3\)"
    ):
        load_dataset("cifar10", str(tmp_path))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    _jpeg_archive(archive, 2)  # the whole archive loads (and is cached)
    assert load_dataset("cifar10", str(tmp_path)).test_x.shape == (20, 3, 32, 32)
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.parametrize("bad", [255, -1, 10])
def test_cifar_pickle_labels_out_of_range_name_the_batch(tmp_path, monkeypatch, bad):
    _synthetic_cifar_expected(monkeypatch)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x = np.zeros((20, 3072), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = np.repeat(np.arange(10), 2).tolist()
        if name == "data_batch_4":
            labels[7] = bad
        (folder / name).write_bytes(pickle.dumps({b"data": x, b"labels": labels}))
    with pytest.raises(DataError, match=rf"^{folder / 'data_batch_4'}: label {bad} outside 0\.\.9$"):
        load_dataset("cifar10", str(tmp_path))


def _mnist_copy(tmp_path, shared_data, name, edit):
    """A copy of the real MNIST folder whose file ``name`` is re-gzipped after ``edit(payload)``."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in (shared_data / "mnist").iterdir():
        (folder / f.name).symlink_to(f)
    payload = bytearray(gzip.decompress((shared_data / "mnist" / name).read_bytes()))
    edit(payload)
    (folder / name).unlink()
    (folder / name).write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    return folder / name


def _relabel(payload):
    payload[8 + 123] = (payload[8 + 123] + 1) % 10  # a valid label, but not the published one


def _repaint(payload):
    payload[16 + 5000] ^= 0x80


@pytest.mark.parametrize(
    ("name", "edit"), [("t10k-labels-idx1-ubyte.gz", _relabel), ("train-images-idx3-ubyte.gz", _repaint)]
)
def test_an_edited_mnist_file_fails_its_checksum(tmp_path, shared_data, name, edit):
    path = _mnist_copy(tmp_path, shared_data, name, edit)
    with pytest.raises(DataError, match=rf"^{path}: sha256 .* differs from the known mnist copy"):
        load_dataset("mnist", str(tmp_path))
    path.unlink()  # the checksum is of the content: a plain (gunzipped) copy of the original loads
    path.with_suffix("").write_bytes(gzip.decompress((shared_data / "mnist" / name).read_bytes()))
    clear_dataset_cache()
    assert np.bincount(load_dataset("mnist", str(tmp_path)).test_y)[0] == 980


def test_a_short_hub_download_is_an_error_and_never_cached(tmp_path, monkeypatch):
    import datasets

    def fake_hub(repo):
        image = np.zeros((28, 28), dtype=np.uint8)
        return {
            split: {"image": [image] * 20, "label": list(range(9)) * 2 + [0, 1]}
            for split in ("train", "test")
        }

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    with pytest.raises(
        DataError, match=r"^ylecun/mnist \(Hugging Face hub\): the mnist train split holds 20 images"
    ):
        load_dataset("mnist", str(tmp_path / "empty"), download=True)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
