"""An in-process implementation of Flower's Grid: the same ServerApp and ClientApp, one process.

Each node is a (node id, Context) pair; ``send_and_receive`` calls the ClientApp directly and,
like the Simulation Engine, turns a ClientApp exception into an error reply. Used by
``--engine inprocess`` for tests, debugging and fast sweeps.

The messages of a phase are delivered side by side, ``workers`` threads at a time (PyTorch
releases the GIL inside its kernels, so clients with one intra-op thread each fill the cores).
A ``timeout`` bounds the whole batch, as on Flower's engines: a client that hangs is left behind
on its own thread and counted as not answering, messages not yet started by then are not
started, and a node that is still busy gets an error reply instead of a second call. Every
client computes from its own seeded generators, so the numbers do not depend on ``workers``
(tested); a run in which a timeout fires is not bit-reproducible (which clients finish in time
depends on speed, and a late call may still update its node's state).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from uuid import uuid4

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run

log = logging.getLogger("flwr.fedkd")


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative); None: no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict | None = None,
        run_id: int = 1,
        workers: int = 1,
    ) -> None:
        self._client_app = client_app
        self._workers = max(1, workers)
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
            return Message(Error(code=ErrorCode.UNKNOWN, reason=f"unknown node {node_id}"), reply_to=message)
        try:
            reply = self._client_app(message, self._contexts[node_id])
        except Exception as exc:  # noqa: BLE001 - reported as an error reply, as Flower does
            log.debug("ClientApp raised on node %s:\n%s", node_id, traceback.format_exc())
            reason = f"{type(exc).__name__}: {exc}"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
            )
        if self.on_reply is not None:
            self.on_reply(reply)
        return reply

    def push_messages(self, messages: Iterable[Message], timeout: float | None = None) -> Iterable[str]:
        messages = list(messages)
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
        if self._workers == 1 and timeout is None:  # plain calls, one after another
            replies: list[Message | None] = [self._busy(m) or self._deliver(m) for m in messages]
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
            if stops or not slots.acquire(timeout=_left(deadline)):
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
            thread.join(_left(deadline))
        if stops:
            raise stops[0]
        return [box[0] if box else None for box in boxes]

    def _busy(self, message: Message) -> Message | None:
        """An error reply when the node is still running an earlier message (one ClientApp call
        per node at a time, as on a real SuperNode); None when it is free."""
        node_id = message.metadata.dst_node_id
        running = self._running.get(node_id)
        if running is None or not running.is_alive():
            return None
        return Message(
            Error(code=ErrorCode.UNKNOWN, reason=f"node {node_id} is still busy with an earlier message"),
            reply_to=message,
        )

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(mid) for mid in message_ids if mid in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages, timeout))
