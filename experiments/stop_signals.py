"""SIGINT and SIGTERM end a run or a sweep alike: the rounds so far kept and marked
``interrupted``, temp and offload files removed, exit 130 or 143, no traceback.

The first signal raises ``fedkd.errors.Interrupted`` (a KeyboardInterrupt) in the main thread, so
the one Ctrl-C path runs for both: the round driver marks results.json, the engine stops its
workers and drops offloaded states. Later signals are ignored, so that this cleanup runs to its
end; should it block anyway, a watchdog gives up after ``GRACE_S`` (marks the results itself and
ends the process with 128 + signal number).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fedkd.errors import Interrupted
from fedkd.results_files import INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 10.0  # seconds the cleanup after a signal may take before the process just ends
_taken: list[tuple[int, threading.Event]] = []  # the signal being handled and its watchdog
_depth = [0]  # nesting of stop_on_signals: only the outermost installs handlers


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def reason(signum: int) -> str:
    return INTERRUPTED if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"


def interrupted(signum: int) -> Interrupted:
    return Interrupted(signum, reason(signum))


def give_up_later(signum: int, on_give_up: Callable[[str], None] | None) -> threading.Event:
    """Start the watchdog: after GRACE_S, ``on_give_up(reason)`` and exit 128 + ``signum``,
    unless the returned event is set first (the cleanup ended)."""
    done = threading.Event()

    def watchdog() -> None:
        if done.wait(GRACE_S):
            return
        if on_give_up is not None:
            on_give_up(reason(signum))
        print(f"fedkd: {reason(signum)}; shutdown took too long, results kept", file=sys.stderr)
        os._exit(exit_code(signum))

    threading.Thread(target=watchdog, daemon=True, name="fedkd-stop-watchdog").start()
    return done


@contextmanager
def stop_on_signals(on_give_up: Callable[[str], None] | None = None) -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise Interrupted once (main thread only; nested: the outer
    one's handlers). ``on_give_up(reason)``: what the watchdog does before it ends the process
    (mark results.json). After a signal the handlers stay ignoring: the process is ending."""
    if threading.current_thread() is not threading.main_thread() or _depth[0]:
        yield
        return
    _taken.clear()

    def on_signal(signum: int, frame: Any) -> None:
        if _taken:
            return  # the cleanup of the first signal is running: let it finish
        _taken.append((signum, give_up_later(signum, on_give_up)))
        raise interrupted(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in SIGNALS}
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        for _, watchdog in _taken:
            watchdog.set()  # the cleanup ended: the process exits on its own (with 128 + signum)
        if not _taken:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def signal_taken(default: int = signal.SIGINT) -> int:
    """The signal this process is stopping for (``default`` when none came: a plain Ctrl-C)."""
    return _taken[0][0] if _taken else default


def ignore_signals() -> None:
    """In a worker process whose parent decides when to stop: ignore both until a run starts."""
    _depth[0] = 0
    _taken.clear()
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
