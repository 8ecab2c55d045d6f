"""Worker processes for the in-process engine: clients of one phase trained side by side.

Small models spend most of a step in Python, under the GIL, so client threads in one process
finish no sooner than one at a time. Like the Simulation Engine's Ray actors, each worker here is
a separate process that builds the ClientApp once and then serves calls: the server ships
(message, node context) and gets back (reply, updated context). The contexts stay with the
server's Grid, so a node may run on any worker in any round and the numbers equal those of one
client at a time (every client computes from its own seeded generators; tested).

Workers with one intra-op thread (``client-threads = 1``, the default) are forked on Linux, as
PyTorch's DataLoader workers are: they start in milliseconds, share the loaded data
copy-on-write, and a script that calls fedkd needs no ``__main__`` guard. With more threads per
client, or off Linux, they come from Python's forkserver instead: a forked child's first
multi-threaded (OpenMP) kernel hangs when the server had used an OpenMP team before the fork, and
fork is unsafe on macOS (and after the server has used CUDA); a script that calls fedkd then
needs the usual ``__main__`` guard.

A batch that runs out of time kills its workers: a client past the deadline is stopped, its node
keeps the state it had before the call, and the next batch gets fresh workers. Ctrl-C stops the
server, which stops the workers (they ignore SIGINT themselves).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from server.client_call import call_client_app, error_reply, seconds_left

AppFactory = Callable[[], ClientApp]
Call = tuple[Message, Context]

_APP: ClientApp | None = None  # this worker's ClientApp, built by _start_worker


def _start_worker(factory: AppFactory, threads: int) -> None:
    global _APP  # noqa: PLW0603 - one ClientApp per worker process, as one per Ray actor
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the server, which stops us
    torch.set_num_threads(threads)
    _APP = factory()


def _serve(message: Message, context: Context) -> tuple[Message, Context]:
    """One ClientApp call in a worker; the context comes back with the node's new state."""
    assert _APP is not None, "worker not started"
    return call_client_app(_APP, message, context), context


class ProcessPool:
    """``workers`` processes, started at the first batch and kept across rounds."""

    def __init__(self, factory: AppFactory, workers: int, threads: int = 1) -> None:
        self._factory, self._workers, self._threads = factory, workers, threads
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # a forked child cannot use CUDA once the server has (FedDF's server model)
            forks = sys.platform == "linux" and self._threads == 1 and not torch.cuda.is_initialized()
            context = multiprocessing.get_context("fork" if forks else "forkserver")
            self._executor = ProcessPoolExecutor(
                self._workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self._factory, self._threads),
            )
        return self._executor

    def deliver(
        self, calls: list[Call], timeout: float | None
    ) -> Iterator[tuple[int, Message, Context | None]]:
        """Yield (index, reply, new context) as calls finish. ``timeout`` bounds the whole batch:
        calls not finished by then yield nothing, and the workers are stopped. A worker that dies
        (a crash, the OOM killer) breaks the whole pool, so the calls it took down are run again,
        each alone in fresh workers: only the call that kills its worker again gets an error
        reply (and no context)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        broken: list[int] = []
        try:
            yield from self._batch(calls, range(len(calls)), deadline, broken)
            for i in list(broken):
                self.stop()
                alone: list[int] = []
                yield from self._batch(calls, [i], deadline, alone)
                if alone:
                    yield i, error_reply(calls[i][0], "client process died (a crash or out of memory)"), None
        except BaseException:
            self.stop()  # Ctrl-C or an error on the server: no worker outlives it
            raise
        if broken:
            self.stop()  # the next batch starts fresh workers

    def _batch(
        self, calls: list[Call], which: Iterable[int], deadline: float | None, broken: list[int]
    ) -> Iterator[tuple[int, Message, Context]]:
        """Run ``calls[i]`` for i in ``which`` side by side; indices whose worker died go to
        ``broken``. Out of time: the workers are stopped and the rest yield nothing."""
        pool = self._pool()
        pending: dict[Future, int] = {pool.submit(_serve, *calls[i]): i for i in which}
        while pending:
            done, _ = wait(pending, timeout=seconds_left(deadline), return_when=FIRST_COMPLETED)
            if not done:
                self.stop()
                return
            for future in done:
                i = pending.pop(future)
                try:
                    reply, context = future.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                yield i, reply, context

    def stop(self) -> None:
        """Stop every worker now (a running call is killed, queued ones never start)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((executor._processes or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join(5)
