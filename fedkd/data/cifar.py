"""CIFAR-10 from the official python pickles or from a JPEG tree archive (decoded once, cached)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from fedkd.data.cache import cache_path, load_cached, save_cached
from fedkd.data.errors import DataError
from fedkd.data.integrity import check_checksum, check_counts, check_labels, file_sha256

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
Split = tuple[np.ndarray, np.ndarray]


# The only globals a CIFAR-10 batch pickle needs (numpy array reconstruction); anything else in
# the file is refused instead of executed.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def load_pickles(folder: Path) -> tuple[Split, Split]:
    """``cifar-10-batches-py``: data_batch_1..5 and test_batch."""

    def batch(name: str) -> Split:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                entry = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            labels = np.asarray(entry[b"labels"], dtype=np.int64)
        except FileNotFoundError:
            raise DataError(f"{folder}: missing {name}") from None
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: corrupt CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise DataError(
                f"{path}: expected (N, 3072) data with N labels, got {data.shape} and {len(labels)}"
            )
        check_labels(labels, len(CLASSES), path)
        return data.reshape(-1, 3, 32, 32), labels

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, batch("test_batch")


def load_jpeg_archive(archive: Path) -> tuple[Split, Split]:
    """``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg`` in a tar(.xz); cached as arrays.

    The archive's checksum is checked before the cache is read, and the decoded splits' counts
    before the cache is written: a damaged archive is an error, never a smaller cached dataset."""
    try:
        check_checksum("cifar10", archive, file_sha256(archive))
    except OSError as exc:
        raise DataError(f"{archive}: cannot read the archive ({exc.strerror or exc})") from None
    cache = cache_path(archive, "cifar10-jpeg")
    cached = load_cached(cache)
    if cached is not None:
        return (cached["train_x"], cached["train_y"]), (cached["test_x"], cached["test_y"])
    splits = _decode_archive(archive)
    (train_x, train_y), (test_x, test_y) = splits
    check_counts("cifar10", "train", train_y, archive)
    check_counts("cifar10", "test", test_y, archive)
    save_cached(cache, {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y})
    return splits


def _decode_archive(archive: Path) -> tuple[Split, Split]:
    from PIL import Image

    found: dict[str, list[tuple[str, int, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith(".jpg"):
                    continue
                split, cls = parts[-3], parts[-2]
                if split not in found or cls not in CLASSES:
                    raise DataError(f"{archive}: unexpected member {member.name}")
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                    pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
                if pixels.shape != (32, 32, 3):
                    raise DataError(f"{archive}: {member.name} is {pixels.shape}, expected 32x32 RGB")
                found[split].append((member.name, CLASSES.index(cls), pixels.transpose(2, 0, 1)))
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{archive}: cannot read the archive ({type(exc).__name__}: {exc})") from None

    def stack(items: list[tuple[str, int, np.ndarray]], split: str) -> Split:
        if not items:
            raise DataError(f"{archive}: no {split}/<class>/*.jpg images")
        items.sort(key=lambda item: item[0])  # archive order is arbitrary: sort by path
        return np.stack([i[2] for i in items]), np.array([i[1] for i in items], dtype=np.int64)

    return stack(found["train"], "train"), stack(found["test"], "test")
