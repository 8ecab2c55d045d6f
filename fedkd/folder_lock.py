"""One owner per folder: an OS file lock (``flock``) on a lock file inside it, held while a run or
a sweep writes there. The OS drops it when the holder exits in any way (a crash, SIGKILL), so a
dead owner never leaves a stale lock; the lock file itself stays (removing it would race with the
next owner). The owner's PID is written into the file, so a refusal can name it.

The owner is a process: taking a lock this process already holds nests (the `fedkd run` command
holds its folder from the start, and the ServerApp it runs, on a thread of the same process, takes
it again; a `flwr run` ServerApp, in a process of its own, holds it alone).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fedkd.errors import ConfigError

RUN_LOCK = ".run.lock"  # in a run's out-dir
SWEEP_LOCK = ".sweep.lock"  # in a sweep's (or a tuning study's) folder

_held: dict[Path, tuple[IO[str], int]] = {}  # lock file -> (open handle, nesting depth)
_guard = threading.Lock()


class FolderBusy(ConfigError):
    """Another live process owns the folder."""


def owner_pid(lock_file: Path) -> str:
    """The PID the owner wrote into the lock file ("unknown" while it is still writing it)."""
    try:
        return lock_file.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _busy(lock_file: Path, what: str) -> FolderBusy:
    return FolderBusy(
        f"{lock_file.parent} is in use by another {what} (PID {owner_pid(lock_file)}); "
        "allowed: wait for it to end, or use another folder"
    )


def _acquire(lock_file: Path, what: str) -> IO[str]:
    try:
        handle = open(lock_file, "a+")  # noqa: SIM115 - held until released
    except OSError as exc:
        raise ConfigError(
            f"{lock_file.parent} cannot be locked for this {what}: {exc.strerror or exc}; "
            "allowed: a folder this user can write"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise _busy(lock_file, what) from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_not_busy(folder: str | Path, name: str = RUN_LOCK, what: str = "fedkd run") -> None:
    """FolderBusy where a live process owns ``folder``; creates and writes nothing (for
    ``--dry-run``, which must refuse what the run would and leave no trace)."""
    lock_file = Path(folder) / name
    try:
        handle = open(lock_file)  # noqa: SIM115 - closed below; reading is enough to test a flock
    except OSError:
        return  # no lock file (never owned) or unreadable: the run's own check decides
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(lock_file, what) from None


@contextmanager
def folder_lock(folder: str | Path, name: str = RUN_LOCK, what: str = "fedkd run") -> Iterator[None]:
    """Own ``folder`` (which must exist) until the block ends; FolderBusy (a one-line ConfigError
    naming the owner's PID) when another process owns it. ``what``: the owner, for the message."""
    lock_file = (Path(folder) / name).resolve()
    with _guard:
        handle, depth = _held.get(lock_file) or (None, 0)
        if handle is None:
            handle = _acquire(lock_file, what)
        _held[lock_file] = (handle, depth + 1)
    try:
        yield
    finally:
        with _guard:
            handle, depth = _held.pop(lock_file)
            if depth > 1:
                _held[lock_file] = (handle, depth - 1)
            else:
                handle.close()  # closing the file releases the lock
