"""Write-then-rename: a file is either its old complete self or its new complete self."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"  # a temp file is ".<name>.<random>.tmp" beside the file it will become


def atomic_write(
    path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False, mode: int = 0o644
) -> Path:
    """Call ``write(handle)`` on a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files of writes that never finished in ``folder`` and below (a worker
    process killed mid-write cannot clean up after itself); call once no writer is left."""
    removed = []
    for stray in Path(folder).rglob(f".*{TEMP_SUFFIX}") if Path(folder).is_dir() else []:
        stray.unlink(missing_ok=True)
        removed.append(stray)
    return removed
