"""What each shipped source must hold, and the checks every load runs before anything is cached.

A damaged file can still parse: tarfile stops quietly at a bad header (half of CIFAR-10's test
split, no error), a pickle can carry any label. Only known facts tell a whole dataset from a
damaged one: split sizes and per-class counts for every source, and a checksum where the copy is
fixed (the idx files and the JPEG archive under the shared data folder, the embedded digits).
They live here, one entry per source; the loaders look them up at call time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedkd.data.errors import DataError


@dataclass(frozen=True)
class Expected:
    train_counts: tuple[int, ...]  # images per class in the train split (class 0 first)
    test_counts: tuple[int, ...]  # images per class in the test split
    # sha256 of a file's content (idx files: after gunzip, so .gz and plain copies match) by file
    # name without .gz; only for fixed copies (a re-encoded or re-downloaded copy has none).
    sha256: Mapping[str, str] = field(default_factory=dict)


_MNIST_TRAIN = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
_MNIST_TEST = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

EXPECTED: dict[str, Expected] = {
    "digits": Expected(  # scikit-learn's load_digits with fedkd's fixed 80/20 split
        (142, 146, 142, 146, 145, 145, 145, 143, 139, 144),
        (36, 36, 35, 37, 36, 37, 36, 36, 35, 36),
        {"load_digits": "ba634f9e7dbd8c847f1e0422223c1a24144772642f705edf00db0ea1b4345688"},
    ),
    "mnist": Expected(
        _MNIST_TRAIN,
        _MNIST_TEST,
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": Expected(
        (6000,) * 10,
        (1000,) * 10,
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    "cifar10": Expected(  # the pickles, the hub copy and the JPEG archive (whose bytes are fixed)
        (5000,) * 10,
        (1000,) * 10,
        {"cifar10-jpeg.tar.xz": "6254f53a1bc70afc08c46178959354e8597763b03706815cc50b5e2cdff16569"},
    ),
}


def check_checksum(name: str, path: Path | str, digest: str) -> None:
    """``digest`` (sha256 of the file's content) must be the registered one, if there is one."""
    want = EXPECTED[name].sha256.get(Path(path).name.removesuffix(".gz"))
    if want is not None and digest != want:
        raise DataError(
            f"{path}: sha256 {digest[:16]}... differs from the known {name} copy ({want[:16]}...); "
            "the file is damaged or not the published one: fetch it again"
        )


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (the CIFAR-10 archive: ~20 ms)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_labels(labels: np.ndarray, num_classes: int, origin: Path | str) -> None:
    """Every label an integer in 0..num_classes-1 (255 or -1 would add or crash on a class)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(f"{origin}: label {int(bad)} outside 0..{num_classes - 1}")


def check_counts(name: str, split: str, labels: np.ndarray, origin: Path | str) -> None:
    """The split holds exactly the registered number of images of every class."""
    want = getattr(EXPECTED[name], f"{split}_counts")
    check_labels(labels, len(want), origin)
    got = np.bincount(labels, minlength=len(want))
    if tuple(got.tolist()) != want:
        cls = int(np.flatnonzero(got != np.asarray(want))[0])
        raise DataError(
            f"{origin}: the {name} {split} split holds {len(labels)} images ({got[cls]} of class {cls}); "
            f"expected {sum(want)} ({want[cls]} of class {cls}): the data is damaged or incomplete"
        )
