"""Array caches for slow-to-decode sources (CIFAR-10 JPEGs, hub downloads).

A cache file is keyed by the source's path, size and mtime, written atomically, and placed
next to the source when that folder is writable, else in ``$FEDKD_CACHE_DIR`` (default
``~/.cache/fedkd``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from fedkd.atomic import atomic_write


def cache_root() -> Path:
    return Path(os.environ.get("FEDKD_CACHE_DIR", Path.home() / ".cache" / "fedkd"))


def cache_path(source: Path, tag: str) -> Path:
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = f"{tag}-{key}.npz"
    beside = source.parent / ".fedkd-cache"
    if _writable(beside) or (not beside.exists() and _writable(source.parent)):
        return beside / name
    return cache_root() / name


def _writable(folder: Path) -> bool:
    """Writable and not marked read-only (root passes os.access on read-only-marked folders)."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)
    except OSError:
        return False


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt, never trusted


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda handle: np.savez(handle, **arrays), binary=True)
