"""What ``fedkd run --dry-run`` checks beyond the config and the split: the out folder, as the
real run would (its owner, fedkd/folder_lock.py; fedkd.results.prepare_out_dir), so a dry run
never calls valid what the run then refuses; it creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

from fedkd.errors import ConfigError
from fedkd.folder_lock import check_not_busy
from fedkd.results import prepare_out_dir


def check_out_dir(out_dir: str | Path, overwrite: bool) -> None:
    """An existing folder gets the real run's check (a write probe, removed at once; results
    already there refused without ``overwrite``); a new one needs a writable existing parent."""
    path = Path(out_dir)
    if path.exists():
        check_not_busy(path)  # a live run owns it: the run would be refused
        prepare_out_dir(path, overwrite)
        return
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"out-dir {str(path)!r} cannot be created: {parent} is not a writable folder")
