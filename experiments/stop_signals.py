"""SIGINT and SIGTERM end a run, a sweep or a tune alike: the rounds so far kept and marked
``interrupted``, temp and offload files removed, exit 130 or 143, no traceback.

The first signal raises ``fedkd.errors.Interrupted`` (a KeyboardInterrupt) in the main thread, so
the one Ctrl-C path runs for all: the round driver marks results.json, the engine stops its
workers and drops offloaded states. Later signals are ignored, so that this cleanup runs to its
end; should it block anyway, a watchdog gives up after ``GRACE_S`` (marks the results itself and
ends the process with 128 + signal number). Work between runs that a signal must not cut half-way
(a tune's Optuna journal) defers it (``deferred_signals``) to its next safe point; a pool's parent
forwards it to its workers (experiments/worker_pool.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fedkd.errors import Interrupted, set_stopping
from fedkd.results_files import INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 10.0  # seconds the cleanup after a signal may take before the process just ends
_taken: list[tuple[int, threading.Event]] = []  # the signal being handled and its watchdog
_depth = [0]  # nesting of stop_on_signals: only the outermost installs handlers
_noted: list[int] = []  # a signal that came while signals were deferred, not yet raised
_deferring = [False]  # within deferred_signals: only the outermost installs its handler
_received = [0]  # signals this process has acted on (raised or noted)
_lost: list[bool] = []  # the first signal's Interrupted was dropped by Python: raise it again


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
    (mark results.json). After a signal the handlers stay ignoring: the process is ending.

    A handler runs wherever the main thread is, also where Python drops exceptions (an at-fork
    hook: a run forks its workers; a finaliser): there the Interrupted is not printed but raised
    again at once, and should it still be lost the block ends with it."""
    if threading.current_thread() is not threading.main_thread() or _depth[0]:
        yield
        return
    raise_if_signalled()  # deferred work noted a signal: the run it was about to start never starts
    _taken.clear()
    _lost.clear()
    set_stopping(None)

    def on_signal(signum: int, frame: Any) -> None:
        if _taken and not _lost:
            return  # the cleanup of the first signal is running: let it finish
        if not _taken:
            _taken.append((signum, give_up_later(signum, on_give_up)))
            _received[0] += 1
            set_stopping(interrupted(signum))
        _lost.clear()
        raise interrupted(_taken[0][0])

    def on_dropped(unraisable: Any) -> None:
        if not (_taken and isinstance(unraisable.exc_value, Interrupted)):
            return hook(unraisable)
        _lost.append(True)  # sent again from another thread: handled once out of where it was
        resend = threading.Timer(0.01, os.kill, (os.getpid(), _taken[0][0]))
        resend.daemon = True
        resend.start()

    previous = {signum: signal.signal(signum, on_signal) for signum in SIGNALS}
    hook, sys.unraisablehook = sys.unraisablehook, on_dropped
    _depth[0] += 1
    try:
        yield
        if _taken:
            raise interrupted(_taken[0][0])
    finally:
        _depth[0] -= 1
        sys.unraisablehook = hook
        for _, watchdog in _taken:
            watchdog.set()  # the cleanup ended: the process exits on its own (with 128 + signum)
        set_stopping(None)  # what runs after the block (a notebook's next run) is not stopping
        if not _taken:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def signal_taken(default: int = signal.SIGINT) -> int:
    """The signal this process is stopping for (``default`` when none came: a plain Ctrl-C)."""
    return _taken[0][0] if _taken else _noted[0] if _noted else default


def _note(signum: int, frame: Any) -> None:
    if not _noted:
        _noted.append(signum)
        _received[0] += 1


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM are noted, not raised, so that bookkeeping between runs (an
    Optuna journal write) is never cut half-way; ``raise_if_signalled`` raises Interrupted at the
    caller's safe points, and a run (``stop_on_signals``) stops wherever it is or before it starts.
    After a signal the handlers stay ignoring: the process is ending."""
    if threading.current_thread() is not threading.main_thread() or _depth[0] or _deferring[0]:
        yield
        return
    _noted.clear()
    previous = {signum: signal.signal(signum, _note) for signum in SIGNALS}
    _deferring[0], received = True, _received[0]
    try:
        yield
    finally:
        _deferring[0] = False
        if _received[0] == received:
            _noted.clear()
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def raise_if_signalled() -> None:
    """A safe point of deferred work: Interrupted if a signal was noted."""
    if _noted:
        raise interrupted(_noted[0])


def ignore_signals(note: bool = False) -> None:
    """In a worker process whose parent decides when to stop: ignore both until a run starts
    (``note``: note them for ``raise_if_signalled``, for workers that do more than runs)."""
    _depth[0], _deferring[0] = 0, False
    _taken.clear()
    _noted.clear()
    set_stopping(None)
    for signum in SIGNALS:
        signal.signal(signum, _note if note else signal.SIG_IGN)
