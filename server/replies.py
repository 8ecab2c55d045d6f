"""The one door every client reply comes through: ``decode_reply``.

A reply is first tied to its request (it must answer a message this phase sent, come from the node
that message went to, and be the first answer to it: a replay from an earlier round or a second
delivery is refused), then read field by field: record kinds, array serialisation, dtype, shape
and size are checked before a byte is decoded (fedkd/protocol.py checks the values). The result
is a ``Decoded`` with typed, checked values or a ``Rejected`` with the reason in a few words;
nothing a client sends can make it raise. Records of the Flower types live here, not in
fedkd/protocol.py, which stays free of flwr.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SType

from fedkd.protocol import (
    METRICS_KEY,
    ProtocolError,
    array_from_npy,
    checked_metrics,
    error_summary,
    partition_id_of,
)

Upload = Callable[[Message, int], Any]  # (reply, server round) -> the checked upload


@dataclass(frozen=True)
class Decoded:
    """A reply that passed every check: who sent it, its metrics and its upload."""

    node: int
    pid: int
    metrics: dict[str, float]
    upload: Any = None


@dataclass(frozen=True)
class Rejected:
    """A reply refused, and why. ``pid`` and ``metrics``: its partition and metrics, when they were
    readable and the partition is this node's (the compute was spent even if the upload is
    refused); ``claimed``: a partition id another node holds (the hello leaves both nodes out);
    ``stated``: the partition id it gave, if readable, whether or not it is this node's."""

    node: int
    reason: str
    pid: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    claimed: int | None = None
    stated: int | None = None


@dataclass
class PhaseRequests:
    """The messages one phase sent (their ids are set once pushed) and which were answered."""

    messages: list[Message]
    answered: set[str] = field(default_factory=set)
    asked: dict[str, Any] = field(default_factory=dict)  # message id -> its metadata, once pushed

    def bind(self, reply: Message) -> None:
        """Refuse a reply that answers no message of this phase, names another round or phase
        than its message, comes from another node than the one asked, or answers a message
        already answered."""
        if not self.asked:
            self.asked.update({m.metadata.message_id: m.metadata for m in self.messages})
        asked, to, meta = self.asked, reply.metadata.reply_to_message_id, reply.metadata
        if to not in asked:
            raise ProtocolError("reply answers no message of this phase (a replay from an earlier round?)")
        if (meta.group_id, meta.message_type) != (asked[to].group_id, asked[to].message_type):
            named = f"{str(meta.message_type)[:40]!r} of round {str(meta.group_id)[:20]!r}"
            raise ProtocolError(f"reply names {named}, not its message's")
        if meta.src_node_id != asked[to].dst_node_id:
            raise ProtocolError(f"reply to node {asked[to].dst_node_id}'s message came from another node")
        if to in self.answered:
            raise ProtocolError("duplicate reply: the first one stands")
        self.answered.add(to)


class Roster(Protocol):
    """What decode_reply needs of server/roster.py's NodeRoster (structural: roster.py imports us)."""

    num_clients: int

    def check(self, node: int, pid: int) -> None: ...

    def register(self, node: int, pid: int) -> None: ...


def decode_reply(
    reply: Message,
    requests: PhaseRequests,
    roster: Roster,
    server_round: int,
    required: tuple[str, ...] = (),
    upload: Upload | None = None,
) -> Decoded | Rejected:
    """Every reply the server receives goes through here; it returns, never raises."""
    node, pid, metrics, stated = _node_of(reply), None, {}, None
    try:
        requests.bind(reply)
        raw = metrics_of(reply)
        stated = partition_id_of(raw, roster.num_clients)
        checked = checked_metrics(raw, required)
        roster.check(node, stated)
        pid, metrics = stated, checked
        value = upload(reply, server_round) if upload is not None else None
        roster.register(node, pid)
        return Decoded(node, pid, metrics, value)
    except ProtocolError as why:
        return Rejected(node, str(why), pid, metrics, getattr(why, "pid", None), stated)
    except Exception as exc:  # noqa: BLE001 - total by contract: whatever slipped the checks is a bad reply
        why = f"malformed reply ({type(exc).__name__}: {error_summary(str(exc))})"
        return Rejected(node, why, pid, metrics, stated=stated)


def _node_of(reply: Message) -> int:
    try:
        return int(reply.metadata.src_node_id)
    except Exception:  # noqa: BLE001 - a reply without a readable sender is still recorded
        return -1


def record_of(reply: Message, key: str, kind: type, what: str) -> Any:
    """The record under ``key`` of a reply's content, when it is of the ``kind`` expected."""
    if reply.has_error():
        raise ProtocolError(f"client error: {error_summary(reply.error.reason)}")
    content = reply.content
    if not isinstance(content, RecordDict) or key not in content:
        raise ProtocolError(f"reply carries no {what}")
    record = content[key]
    if not isinstance(record, kind):
        raise ProtocolError(f"{what} sent as {type(record).__name__}, expected {kind.__name__}")
    return record


def metrics_of(reply: Message) -> MetricRecord:
    return record_of(reply, METRICS_KEY, MetricRecord, "metrics")


def config_of(reply: Message, key: str, what: str) -> ConfigRecord:
    return record_of(reply, key, ConfigRecord, what)


def arrays_of(
    reply: Message, key: str, what: str, spec: Mapping[str, tuple[Collection[str], tuple[int, ...] | int]]
) -> dict[str, np.ndarray]:
    """The arrays of the ArrayRecord under ``key``, decoded only after their names, serialisation,
    dtype and shape are what ``spec`` allows: name -> (dtypes, exact shape or most entries)."""
    record = record_of(reply, key, ArrayRecord, what)
    unknown = sorted(set(record) - set(spec))
    if unknown:
        raise ProtocolError(f"the {what} record holds unknown arrays {[u[:30] for u in unknown[:3]]}")
    out = {}
    for name, array in record.items():
        dtypes, shape = spec[name]
        out[name] = _decoded(array, name, dtypes, shape)
    return out


def _decoded(array: Any, name: str, dtypes: Collection[str], shape: tuple[int, ...] | int) -> np.ndarray:
    if not isinstance(array, Array):
        raise ProtocolError(f"array {name} is a {type(array).__name__}, not an Array")
    if array.stype != SType.NUMPY:
        raise ProtocolError(
            f"array {name} is serialised as {str(array.stype)[:40]!r}; allowed: {SType.NUMPY}"
        )
    claimed = tuple(array.shape)
    if isinstance(shape, tuple) and claimed != shape:
        raise ProtocolError(f"array {name} has shape {claimed}, expected {shape}")
    most = int(np.prod(shape)) if isinstance(shape, tuple) else shape
    try:
        return array_from_npy(bytes(array.data), str(array.dtype), claimed, dtypes, most)
    except ProtocolError as why:
        raise ProtocolError(f"array {name}: {why}") from None
