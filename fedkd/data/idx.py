"""Reader for the idx format of MNIST and Fashion-MNIST (gzipped or plain), strictly checked."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from fedkd.data.errors import DataError
from fedkd.data.integrity import EXPECTED, check_checksum, check_labels

_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dim, images: 3 dims (N, H, W)


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """The uint8 array stored in an idx file and the sha256 of the file's (gunzipped) content;
    DataError if it is not exactly that."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot read ({type(exc).__name__}: {exc}); the file is corrupt or truncated"
        ) from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an idx file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _MAGIC:
        raise DataError(f"{path}: not an idx file of uint8 data (magic number {magic:#x})")
    ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes) but the file holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims), hashlib.sha256(raw).hexdigest()


def load_idx_split(folder: Path, prefix: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, 28, 28) uint8, labels (N,) int64) for prefix 'train' or 't10k' of source
    ``name``; the format is checked first (the more telling error), then labels and checksums."""
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    (images, images_sha), (labels, labels_sha) = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{images_path}: expected images (N, H, W) and labels (N,)")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    check_labels(labels, len(EXPECTED[name].train_counts), labels_path)
    check_checksum(name, images_path, images_sha)
    check_checksum(name, labels_path, labels_sha)
    return images[:, None].copy(), labels.astype(np.int64)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: missing {stem}.gz")


def has_idx_files(folder: Path) -> bool:
    return (folder / "train-images-idx3-ubyte.gz").is_file() or (folder / "train-images-idx3-ubyte").is_file()
