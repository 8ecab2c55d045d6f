"""Jobs in worker processes, a few at a time, that a signal stops cleanly: what `fedkd sweep`
(runs) and `fedkd tune` (studies) share.

At most ``workers`` jobs are in the pool at once, so none waits in its queue where a stop could
not reach it. When the parent stops (a signal in it, an error, or its consumer closing the
iterator), it forwards the signal it stops for to the live workers, each ends its job as that
signal would (experiments/stop_signals.py), and the parent waits for them before it goes on.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from itertools import islice
from typing import TypeVar

from experiments.stop_signals import ignore_signals, signal_taken
from fedkd.orphans import die_with_parent

Item = TypeVar("Item")
Result = TypeVar("Result")


def in_pool(
    job: Callable[[Item], Result], items: Iterable[Item], workers: int, note_signals: bool = False
) -> Iterator[tuple[Item, Result]]:
    """``job(item)`` for each item in ``workers`` processes; yields (item, result) as each
    finishes. Close it when done. A worker takes SIGINT/SIGTERM only while it runs a run (a
    ``stop_on_signals`` block); ``note_signals``: it notes them otherwise, for jobs that check
    (``raise_if_signalled``) between runs."""
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(os.getpid(), note_signals))
    try:
        queue = iter(items)
        running = {pool.submit(job, item): item for item in islice(queue, workers)}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                item = running.pop(future)
                yield item, future.result()
                for following in islice(queue, 1):
                    running[pool.submit(job, following)] = following
    except BaseException:  # a signal here, an error, or the consumer closed us: stop the jobs
        _interrupt_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # interrupted jobs end in seconds


def _start_worker(parent: int, note_signals: bool) -> None:
    """A worker dies with its parent (fedkd/orphans.py), which decides when it stops."""
    die_with_parent(parent)
    ignore_signals(note_signals)


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    """The signal this process stops for (SIGINT when none came) to each live worker."""
    for process in list((pool._processes or {}).values()):  # no public list of them
        if process.is_alive():
            os.kill(process.pid, signal_taken(signal.SIGINT))
