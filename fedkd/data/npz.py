"""``dataset = "npz"``: your own images in one NumPy .npz file, named by ``data-dir``.

The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test``: images (N, H, W) or
(N, C, H, W), uint8 (0..255) or float (0..1), and integer labels 0..C-1 (C: the largest label
plus one); optionally ``class_names``, C strings. Written with e.g.
``np.savez("mine.npz", x_train=..., y_train=..., x_test=..., y_test=...)``. Everything fedkd
must know of a dataset (classes, image shape, train size) is read from the file, so the same
config on another file is another dataset; each problem is one line naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedkd.data.cifar import Split
from fedkd.data.errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class NpzData(NamedTuple):
    train: Split  # uint8 (N, C, H, W) images, int64 labels
    test: Split
    num_classes: int  # the largest label plus one
    class_names: tuple[str, ...]  # empty: the file names none


def npz_path(root: Path | None) -> Path:
    """The file ``data-dir`` names (a folder or nothing is an error)."""
    if root is None or not root.is_file():
        what = "nothing (no data-dir and no $FEDKD_DATA_DIR)" if root is None else f"{str(root)!r}"
        why = "is not a file" if root is not None and root.exists() else "does not exist"
        raise DataError(
            f"dataset=npz reads the .npz file data-dir names; data-dir names {what}"
            + ("" if root is None else f", which {why}")
            + "; allowed: the path of a .npz file holding x_train, y_train, x_test, y_test"
        )
    return root


def read_npz(path: Path) -> NpzData:
    """The file's splits as fedkd keeps them, checked, and its classes."""
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)
    try:
        archive = np.load(path, allow_pickle=False)
        arrays: dict[str, np.ndarray] = {}  # a lone .npy array holds none of the four
        if isinstance(archive, np.lib.npyio.NpzFile):
            with archive:
                arrays = {key: archive[key] for key in archive.files}
    except unreadable as exc:
        raise DataError(f"{path}: not a readable .npz file ({' '.join(str(exc).split())})") from None
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)}; allowed: a .npz with {', '.join(ARRAYS)}")
    x_train, y_train, x_test, y_test = (arrays[key] for key in ARRAYS)
    names = arrays.get("class_names", np.array([], dtype=str))
    train = _images(x_train, "x_train", path), _labels(y_train, "y_train", len(x_train), path)
    test = _images(x_test, "x_test", path), _labels(y_test, "y_test", len(x_test), path)
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(
            f"{path}: x_train images are {train[0].shape[1:]} but x_test images {test[0].shape[1:]}; "
            "allowed: one (C, H, W) for both"
        )
    classes = max(int(train[1].max()), int(test[1].max())) + 1
    return NpzData(train, test, classes, _class_names(names, classes, path))


def _images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """(N, H, W) or (N, C, H, W), uint8 or float in 0..1 -> uint8 (N, C, H, W)."""
    if x.ndim not in (3, 4) or x.shape[0] == 0:
        raise DataError(f"{path}: {key} has shape {x.shape}; allowed: (N, H, W) or (N, C, H, W), N >= 1")
    x = x[:, None] if x.ndim == 3 else x
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1:
        return np.rint(x * 255).astype(np.uint8)
    low, high = (x.min(), x.max()) if np.issubdtype(x.dtype, np.number) else ("?", "?")
    raise DataError(
        f"{path}: {key} holds {x.dtype} values from {low} to {high}; allowed: uint8, or floats in 0..1"
    )


def _labels(y: np.ndarray, key: str, count: int, path: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != count or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{path}: {key} is {y.dtype} of shape {y.shape}; allowed: {count} integer labels (one per image)"
        )
    if y.min() < 0:
        raise DataError(f"{path}: {key} holds label {int(y.min())}; allowed: 0 and above")
    return y.astype(np.int64, copy=False)


def _class_names(names: np.ndarray, classes: int, path: Path) -> tuple[str, ...]:
    if names.size and (names.ndim != 1 or len(names) != classes or names.dtype.kind != "U"):
        raise DataError(
            f"{path}: class_names is {names.dtype} of shape {names.shape}; allowed: {classes} strings "
            "(one per class, the largest label plus one)"
        )
    return tuple(str(name) for name in names)
