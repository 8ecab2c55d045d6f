"""An in-process implementation of Flower's Grid: the same ServerApp and ClientApp, one process.

Each node is a (node id, Context) pair; ``send_and_receive`` calls the ClientApp directly and,
like the Simulation Engine, turns a ClientApp exception into an error reply. Used by
``--engine inprocess`` for tests, debugging and fast sweeps.

Clients run one after another, so a ``timeout`` bounds each client's reply (not the whole batch,
as on Flower's engines where clients run side by side): a client that hangs is left behind on
its own thread and counted as not answering; the others are still served, and that node gets
no new message until its call ends. A run in which a client timed out is not bit-reproducible
(the late call may still update the node's state and the process's torch thread count).
"""

from __future__ import annotations

import logging
import threading
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


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict | None = None,
        run_id: int = 1,
    ) -> None:
        self._client_app = client_app
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
        self._running: dict[int, threading.Thread] = {}  # node id -> its call under a timeout
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
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            ids.append(message.metadata.message_id)
            reply = self._deliver(message) if timeout is None else self._deliver_within(message, timeout)
            if reply is None:
                log.debug("node %s did not answer within %s s", message.metadata.dst_node_id, timeout)
                continue
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = reply
        return ids

    def _deliver_within(self, message: Message, timeout: float) -> Message | None:
        """Deliver on a daemon thread; None if no reply within ``timeout`` seconds. A node whose
        earlier message is still running gets no new one (one ClientApp call per node at a time,
        as on a real SuperNode); it answers again once that call has ended."""
        node_id = message.metadata.dst_node_id
        running = self._running.get(node_id)
        if running is not None and running.is_alive():
            return Message(
                Error(code=ErrorCode.UNKNOWN, reason=f"node {node_id} is still busy with an earlier message"),
                reply_to=message,
            )
        box: list[Message] = []
        worker = threading.Thread(target=lambda: box.append(self._deliver(message)), daemon=True)
        self._running[node_id] = worker
        worker.start()
        worker.join(timeout)
        return box[0] if box else None

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(mid) for mid in message_ids if mid in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages, timeout))
