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
keeps the state it had before the call, and the next batch gets fresh workers. Ctrl-C or SIGTERM
stops the server, which stops the workers (they ignore both themselves).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedkd.orphans import die_with_parent
from server.client_call import call_client_app, error_reply, seconds_left

AppFactory = Callable[[], ClientApp]
Call = tuple[Message, Context]

STOP_WAIT_S = 5.0  # at most this long for the executor's own thread once the workers are dead
_APP: ClientApp | None = None  # this worker's ClientApp, built by _start_worker


def _start_worker(factory: AppFactory, threads: int, parent: int) -> None:
    global _APP  # noqa: PLW0603 - one ClientApp per worker process, as one per Ray actor
    # a killed server leaves no worker behind (a forkserver's child: the forkserver, which ends
    # with the server)
    die_with_parent(parent or os.getppid())
    for signum in (signal.SIGINT, signal.SIGTERM):  # they belong to the server, which stops us
        signal.signal(signum, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _APP = factory()


def _serve(message: Message, context: Context) -> tuple[Message, Context]:
    """One ClientApp call in a worker; the context comes back with the node's new state."""
    assert _APP is not None, "worker not started"
    return call_client_app(_APP, message, context), context


class ProcessPool:
    """``workers`` processes, started at the first batch and kept across rounds. ``forks``: the
    clients compute on the CPU, so workers may be forked (a forked child cannot use CUDA once
    the parent has touched it)."""

    def __init__(self, factory: AppFactory, workers: int, threads: int = 1, forks: bool = True) -> None:
        self._factory, self._workers, self._threads = factory, workers, threads
        self._forks = forks and sys.platform == "linux" and threads == 1
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self, workers: int | None = None) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("fork" if self._forks else "forkserver")
            self._executor = ProcessPoolExecutor(
                workers or self._workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self._factory, self._threads, os.getpid() if self._forks else 0),
            )
        return self._executor

    def deliver(
        self, calls: list[Call], timeout: float | None
    ) -> Iterator[tuple[int, Message, Context | None]]:
        """Yield (index, reply, new context) as calls finish. ``timeout`` bounds the whole batch:
        calls not finished by then yield nothing, and the workers are stopped. A worker that dies
        (a crash, the OOM killer) breaks the whole pool and every call still in it; those calls
        run again in fresh workers, and if the pool breaks again, each of the rest runs alone,
        so only a call that kills its worker every time gets an error reply (and no context)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            broken = yield from self._batch(calls, range(len(calls)), deadline)
            if broken:
                self.stop()
                broken = yield from self._batch(calls, broken, deadline)
            for i in broken:
                self.stop()
                if (yield from self._batch(calls, [i], deadline, workers=1)):
                    yield i, error_reply(calls[i][0], "client process died (a crash or out of memory)"), None
            if broken:
                self.stop()  # the next batch starts with a full pool of fresh workers
        except BaseException:
            self.stop()  # Ctrl-C or an error on the server: no worker outlives it
            raise

    def _batch(
        self, calls: list[Call], which: Iterable[int], deadline: float | None, workers: int | None = None
    ) -> Generator[tuple[int, Message, Context], None, list[int]]:
        """Run ``calls[i]`` for i in ``which`` side by side; returns the indices whose worker
        died (a broken pool). Out of time: the workers are stopped and the rest yield nothing."""
        pool = self._pool(workers)
        pending: dict[Future, int] = {}
        broken: list[int] = []
        for i in which:
            try:
                pending[pool.submit(_serve, *calls[i])] = i
            except BrokenProcessPool:  # the pool broke while the batch was being handed out
                broken.append(i)
        while pending:
            done, _ = wait(pending, timeout=seconds_left(deadline), return_when=FIRST_COMPLETED)
            if not done:
                self.stop()
                return []
            for future in done:
                i = pending.pop(future)
                try:
                    reply, context = future.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                yield i, reply, context
        return sorted(broken)

    def stop(self) -> None:
        """Stop every worker now (a running call is killed, queued ones never start). Never
        blocks on a dead pipe: a worker killed halfway through sending its reply leaves the
        executor's thread reading a message that never ends (this process holds the pipe's write
        end too, so no end-of-file comes); closing that write end once the workers are dead
        ends the read, and the thread is waited for a bounded time only."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((executor._processes or {}).values())  # no public kill before Python 3.14
        for process in processes:
            process.kill()
        for process in processes:
            process.join(5)
        thread = executor._executor_manager_thread
        # the workers' copies died with them: a read blocked on it now ends. (The call queue's
        # reader the executor's thread closes itself once it sees the dead workers: closing it
        # here too could close a file descriptor number reused meanwhile.)
        executor._result_queue._writer.close()
        executor._call_queue.cancel_join_thread()  # its feeder may hold a message no worker takes
        executor.shutdown(wait=False, cancel_futures=True)
        if thread is not None:
            thread.join(STOP_WAIT_S)
