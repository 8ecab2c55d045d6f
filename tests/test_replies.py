"""Hostile replies against the real round loop (in-process, digits): each shape is refused and
recorded in failed_clients, the run completes, the honest clients carry on (server/replies.py)."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord

from fedkd.protocol import KNOWLEDGE_KEY, METRICS_KEY, WEIGHTS_KEY, ProtocolError, array_from_npy
from tests.conftest import tiny_config
from tests.hostile import Hostile, refused, run_hostile

LOCAL, DISTILL, HELLO = ("train.local",), ("train.distill",), ("query.hello",)


def _swap(key: str, record) -> callable:
    def act(reply: Message, msg: Message, history: list[Message]) -> Message:
        reply.content[key] = record
        return reply

    return act


def _each_array(key: str, forge) -> callable:
    def act(reply: Message, msg: Message, history: list[Message]) -> Message:
        reply.content[key] = ArrayRecord({name: forge(arr) for name, arr in reply.content[key].items()})
        return reply

    return act


def _metric(**values) -> callable:
    def act(reply: Message, msg: Message, history: list[Message]) -> Message:
        reply.content[METRICS_KEY] = MetricRecord({**reply.content[METRICS_KEY], **values})
        return reply

    return act


def _replay(reply: Message, msg: Message, history: list[Message]) -> Message | None:
    """Round 2 gets the round-1 reply of the same phase again."""
    if int(msg.metadata.group_id) < 2:
        return None
    return next(r for r in history if r.metadata.message_type == msg.metadata.message_type)


def _regroup(reply: Message, msg: Message, history: list[Message]) -> Message:
    reply.metadata.group_id = str(int(msg.metadata.group_id) + 1)
    return reply


def _torch_stype(arr: Array) -> Array:
    return Array(dtype=arr.dtype, shape=tuple(arr.shape), stype="torch.Tensor", data=arr.data)


def _garbage(arr: Array) -> Array:
    return Array(dtype=arr.dtype, shape=tuple(arr.shape), stype=arr.stype, data=b"\x93NUMPY garbage" * 7)


def _pickled(arr: Array) -> Array:
    data = pickle.dumps(np.zeros(tuple(arr.shape), np.float32))
    return Array(dtype=arr.dtype, shape=tuple(arr.shape), stype=arr.stype, data=data)


def _strings(arr: Array) -> Array:
    return Array(arr.numpy().astype(str))


# name -> (algorithm, act, phases, partitions, words of the recorded reason)
SHAPES = {
    "knowledge as a MetricRecord": (
        "knfu",
        _swap(KNOWLEDGE_KEY, MetricRecord({"soft": 0.5})),
        LOCAL,
        (1,),
        "as MetricRecord",
    ),
    "knowledge as a ConfigRecord": (
        "knfu",
        _swap(KNOWLEDGE_KEY, ConfigRecord({"soft": "x"})),
        LOCAL,
        (1,),
        "as ConfigRecord",
    ),
    "array serialised as torch.Tensor": (
        "knfu",
        _each_array(KNOWLEDGE_KEY, _torch_stype),
        LOCAL,
        (1,),
        "torch.Tensor",
    ),
    "garbage bytes": ("knfu", _each_array(KNOWLEDGE_KEY, _garbage), LOCAL, (1,), "not a plain npy"),
    "pickled payload": ("knfu", _each_array(KNOWLEDGE_KEY, _pickled), LOCAL, (1,), "not a plain npy"),
    "FedAvg weights as string arrays": ("fedavg", _each_array(WEIGHTS_KEY, _strings), LOCAL, (1,), "dtype"),
    "FedDF weights as a MetricRecord": (
        "feddf",
        _swap(WEIGHTS_KEY, MetricRecord({"w": 1.0})),
        LOCAL,
        (1,),
        "as MetricRecord",
    ),
    "metrics as an ArrayRecord": ("knfu", _swap(METRICS_KEY, ArrayRecord()), DISTILL, (1,), "as ArrayRecord"),
    "num-examples 1.5e308 from two clients": (
        "fedavg",
        _metric(**{"num-examples": 1.5e308}),
        LOCAL,
        (0, 1),
        "num-examples",
    ),
    "num-examples beyond the train split": (
        "fedavg",
        _metric(**{"num-examples": 1438.0}),
        LOCAL,
        (1,),
        "num-examples",
    ),
    "count as a 400-digit integer": ("knfu", _metric(**{"compute-seconds": 10**400}), LOCAL, (1,), "finite"),
    "reply naming another round": ("knfu", _regroup, DISTILL, (1,), "not its message's"),
    "count beyond 2^53": ("knfu", _metric(**{"private-samples": 1e300}), DISTILL, (1,), "private-samples"),
    "local reply of round 1 replayed in round 2": ("knfu", _replay, LOCAL, (1,), "replay"),
    "distil reply of round 1 replayed in round 2": ("knfu", _replay, DISTILL, (1,), "replay"),
    "local reply delivered twice": ("knfu", lambda r, m, h: "duplicate", LOCAL, (1,), "duplicate"),
    "distil reply delivered twice": ("fedavg", lambda r, m, h: "duplicate", DISTILL, (1,), "duplicate"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_hostile_reply_is_refused_and_recorded_and_the_run_completes(shape):
    algorithm, act, phases, bad, words = SHAPES[shape]
    cfg = tiny_config(algorithm=algorithm, models="mlp", **{"num-clients": 4})
    hostile = Hostile(cfg, act, bad, phases)
    results = run_hostile(cfg, hostile)
    assert len(results.rounds) == cfg.run.rounds and hostile.tampered
    reasons = refused(results)
    for key in hostile.tampered:
        assert key in reasons and words in reasons[key], (key, reasons)
    for record in results.rounds:
        assert {2, 3} <= set(record["client_acc"]) and 0.3 < record["alma"] <= 1.0


def test_a_duplicate_counts_once_and_the_first_reply_stands():
    """Every reply of partition 1 arrives twice: the copies are refused without undoing the
    originals (the client is fused and scored) and its sample counts are what it reported once."""
    cfg = tiny_config(**{"num-clients": 3})
    reported: dict[int, float] = {}  # round -> private samples the client reported (both phases)

    def double(reply: Message, msg: Message, history: list[Message]) -> str:
        rnd = int(msg.metadata.group_id)
        reported[rnd] = reported.get(rnd, 0.0) + reply.content[METRICS_KEY]["private-samples"]
        return "duplicate"

    hostile = Hostile(cfg, double, (1,), LOCAL + DISTILL)
    results = run_hostile(cfg, hostile)
    assert set(refused(results)) == set(hostile.tampered) and len(hostile.tampered) == 2 * cfg.run.rounds
    for record in results.rounds:
        assert 1 in record["client_acc"] and 1 in record["participants"]
        assert record["private_samples"][1] == reported[record["round"]]


def test_a_hello_delivered_twice_keeps_its_node():
    """A second copy of a hello is not a second node claiming the partition."""
    cfg = tiny_config(**{"num-clients": 3, "rounds": 1})
    results = run_hostile(cfg, Hostile(cfg, lambda r, m, h: "duplicate", (1,), HELLO))
    assert 1 in results.payload["environment"]["client_devices"]
    assert 1 in results.rounds[0]["client_acc"]


def test_npy_bytes_are_read_only_when_they_hold_exactly_what_the_record_claims():
    good = np.arange(6, dtype=np.float32).reshape(2, 3)
    buffer = io.BytesIO()
    np.save(buffer, good)
    data = buffer.getvalue()
    np.testing.assert_array_equal(array_from_npy(data, "float32", (2, 3), {"float32"}, 6), good)
    zipped = io.BytesIO()
    np.savez(zipped, a=good)
    for bad_data, dtype, shape, why in (
        (data, "float64", (2, 3), "dtype"),  # not allowed
        (data, "float32", (3, 2), "the record says"),  # the record lies about the shape
        (data, "float32", (2, 4), "more than"),  # more entries than allowed
        (data + b"\0", "float32", (2, 3), "data bytes"),  # trailing bytes
        (data[:-1], "float32", (2, 3), "data bytes"),
        (zipped.getvalue(), "float32", (2, 3), "not a plain npy"),
        (pickle.dumps(good), "float32", (2, 3), "not a plain npy"),
    ):
        with pytest.raises(ProtocolError, match=why):
            array_from_npy(bad_data, dtype, shape, {"float32"}, 6)
