"""An in-process implementation of Flower's Grid: the same ServerApp and ClientApp, no network.

Each node is a (node id, Context) pair; ``send_and_receive`` calls the ClientApp directly and,
like the Simulation Engine, turns a ClientApp exception into an error reply. Used by
``--engine inprocess`` for tests, debugging and fast sweeps.

The messages of a phase are delivered side by side by ``workers`` worker processes
(server/inprocess/pool.py; given an ``app_factory``) or threads. Every client computes from its own
seeded generators, so the numbers do not depend on ``workers`` or the pool (tested). A ``timeout``
bounds the whole batch, as on Flower's engines. On threads, a client that hangs is left behind on
its own thread and counted as not answering, messages not yet started by then are not started,
and a node that is still busy gets an error reply instead of a second call; on processes, the
late clients are stopped and their nodes keep their state. A run in which a timeout fires is not
bit-reproducible (which clients finish in time depends on speed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from uuid import uuid4

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from server.client_call import call_client_app, error_reply, seconds_left
from server.inprocess.idle_state import IdleStates
from server.inprocess.pool import AppFactory, ProcessPool

log = logging.getLogger("flwr.fedkd")


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict | None = None,
        run_id: int = 1,
        workers: int = 1,
        app_factory: AppFactory | None = None,
        client_threads: int = 1,
        on_cpu: bool = True,
        offload_idle: bool = False,
    ) -> None:
        """``app_factory`` (picklable, building ``client_app`` anew): with ``workers`` > 1, the
        clients run in that many worker processes instead of threads (forked only ``on_cpu``).
        ``offload_idle``: between calls, a node's state waits on disk (server/inprocess/idle_state.py)."""
        self._offload = IdleStates() if offload_idle else None
        self._client_app = client_app
        self._workers = max(1, workers)
        self._processes = (
            ProcessPool(app_factory, self._workers, client_threads, forks=on_cpu)
            if app_factory is not None and self._workers > 1
            else None
        )
        self._run = Run.create_empty(run_id)
        # Random-looking node ids, as in Flower: the server must not assume id order = partition.
        ids = np.random.default_rng(12345).choice(2**31 - 1, size=num_nodes, replace=False) + 1
        self._contexts: dict[int, Context] = {
            int(node_id): Context(
                run_id=run_id,
                node_id=int(node_id),
                node_config={"partition-id": pid, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for pid, node_id in enumerate(ids)
        }
        self._replies: dict[str, Message] = {}
        self._running: dict[int, threading.Thread] = {}  # node id -> its latest call
        self.on_reply: Callable[[Message], None] | None = None  # told of each reply (server/progress.py)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:  # noqa: D102
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=node_id) for node_id in self._contexts]

    def context(self, node_id: int) -> Context:
        return self._contexts[node_id]

    def _deliver(self, message: Message) -> Message:
        node_id = message.metadata.dst_node_id
        if node_id not in self._contexts:
            return error_reply(message, f"unknown node {node_id}")
        context = self._in_memory(node_id)
        reply = call_client_app(self._client_app, message, context)
        self._idle(context)
        if self.on_reply is not None:
            self.on_reply(reply)
        return reply

    def push_messages(self, messages: Iterable[Message], timeout: float | None = None) -> Iterable[str]:
        messages = list(messages)
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
        if self._processes is not None:
            replies: list[Message | None] = self._deliver_in_processes(messages, timeout)
        elif self._workers == 1 and timeout is None:  # plain calls, one after another
            replies = [self._busy(m) or self._deliver(m) for m in messages]
        else:
            replies = self._deliver_side_by_side(messages, timeout)
        for message, reply in zip(messages, replies, strict=True):
            if reply is None:
                log.debug("node %s did not answer within %s s", message.metadata.dst_node_id, timeout)
                continue
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = reply
        return [m.metadata.message_id for m in messages]

    def _deliver_side_by_side(self, messages: list[Message], timeout: float | None) -> list[Message | None]:
        """One batch on daemon threads, at most ``workers`` alive at once; ``timeout`` bounds the
        whole batch (as on Flower's engines). A message whose turn has not come by the deadline
        is never started; one still running then is left behind (daemon: it never blocks the
        process's exit) and its node stays busy until it ends. None: no reply in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        slots = threading.BoundedSemaphore(self._workers)
        boxes: list[list[Message]] = [[] for _ in messages]
        stops: list[BaseException] = []  # Ctrl-C / exit raised inside a ClientApp: the run's, as serially
        threads: list[threading.Thread] = []
        for message, box in zip(messages, boxes, strict=True):
            busy = self._busy(message)
            if busy is not None:
                box.append(busy)
                continue
            if stops or not slots.acquire(timeout=seconds_left(deadline)):
                break  # out of time (or stopping): the rest are not started

            def call(message: Message = message, box: list[Message] = box) -> None:
                try:
                    box.append(self._deliver(message))
                except BaseException as stop:  # noqa: BLE001 - re-raised on the server's thread
                    stops.append(stop)
                finally:
                    slots.release()

            thread = threading.Thread(target=call, daemon=True, name="fedkd-client")
            self._running[message.metadata.dst_node_id] = thread
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(seconds_left(deadline))
        if stops:
            raise stops[0]
        return [box[0] if box else None for box in boxes]

    def _deliver_in_processes(self, messages: list[Message], timeout: float | None) -> list[Message | None]:
        """One batch on the worker processes (server/inprocess/pool.py); each node's context goes
        with its message and comes back updated. None: no reply in time."""
        assert self._processes is not None
        replies: list[Message | None] = [None] * len(messages)
        calls, at = [], []
        for i, message in enumerate(messages):
            node_id = message.metadata.dst_node_id
            if node_id in self._contexts:
                calls.append((message, self._in_memory(node_id)))
                at.append(i)
            else:
                replies[i] = error_reply(message, f"unknown node {node_id}")
        for j, reply, context in self._processes.deliver(calls, timeout):
            if context is not None:
                self._contexts[context.node_id] = context
            replies[at[j]] = reply
            if self.on_reply is not None:
                self.on_reply(reply)
        for message, _ in calls:  # answered or not (late, crashed), each node's state goes back
            self._idle(self._contexts[message.metadata.dst_node_id])
        return replies

    def _in_memory(self, node_id: int) -> Context:
        """The node's context, its state back from disk when idle clients are offloaded."""
        context = self._contexts[node_id]
        return self._offload.take_back(context) if self._offload is not None else context

    def _idle(self, context: Context) -> None:
        if self._offload is not None:
            self._offload.put_away(context)

    def close(self) -> None:
        """Stop the worker processes and drop offloaded states, if any (the end of a run)."""
        if self._processes is not None:
            self._processes.stop()
        if self._offload is not None:
            self._offload.close()

    def _busy(self, message: Message) -> Message | None:
        """An error reply when the node is still running an earlier message (one ClientApp call
        per node at a time, as on a real SuperNode); None when it is free."""
        node_id = message.metadata.dst_node_id
        running = self._running.get(node_id)
        if running is None or not running.is_alive():
            return None
        return error_reply(message, f"node {node_id} is still busy with an earlier message")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(mid) for mid in message_ids if mid in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages, timeout))
