"""Generated hostile replies against the real round loop (in-process, digits), for every registered
algorithm: whatever one client sends (record kinds, array bytes, dtypes, shapes, metric values,
duplicates, replays), the run completes, every bad reply is recorded as refused (the hello's too: a
bad hello leaves its node out of the run) and the honest clients are scored. Well-formed uploads
with hostile values: tests/test_upload_values_fuzz.py."""

from __future__ import annotations

import math

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedkd.fusion import FUSIONS
from fedkd.metric_specs import MAX_COUNT
from fedkd.protocol import INFO_KEY, METRICS_KEY, metric_ranges
from tests.conftest import tiny_config
from tests.hostile import Hostile, refused, run_hostile

WRONG_DTYPES = ("int8", "int64", "float16", "float64", "bool", "complex64", "<U2")  # never on the wire


def _bad_value(key: str) -> st.SearchStrategy:
    """A value MetricRecord accepts but the server must refuse for metric ``key``."""
    if key == "partition-id":
        inside = st.integers(0, 3).filter(lambda v: v != 1)  # another node's partition
        return st.one_of(inside, st.floats(0.1, 0.9), st.just(float("nan")), st.integers(4, 2**62))
    low, high = metric_ranges()[key]
    outside = st.floats(allow_nan=True).filter(lambda v: not (math.isfinite(v) and low <= v <= high))
    beyond_floats = st.integers(2**1030, 2**1100)  # no float holds it: not a finite number
    values = [outside, beyond_floats, st.lists(st.floats(0, 1), max_size=3)]
    if high < math.inf:  # float(2**53 + 1) rounds back to 2**53
        values.append(st.integers(int(min(high, MAX_COUNT)) + 2, 2**1100))
    if low > -math.inf:
        values.append(st.integers(-(2**40), math.ceil(low) - 1))
    return st.one_of(*values)


def _metric_forgery(keys: list[str]) -> st.SearchStrategy:
    return st.sampled_from(keys).flatmap(
        lambda key: st.tuples(st.just("metric"), st.just(key), _bad_value(key))
    )


METRIC_FORGERY = _metric_forgery([*metric_ranges(), "partition-id"])
RECORD_FORGERY = st.tuples(
    st.just("record"), st.integers(0, 5), st.sampled_from(["metric", "config", "array", "missing"])
)
ARRAY_FORGERY = st.tuples(
    st.just("array"),
    st.integers(0, 50),  # which array of the upload
    st.one_of(
        st.tuples(st.just("stype"), st.text(max_size=12).filter(lambda s: s != "numpy.ndarray")),
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
        st.tuples(
            st.just("npy"),
            hnp.arrays(st.sampled_from(WRONG_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
        ),
        st.tuples(st.just("shape"), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
        st.tuples(st.just("dtype"), st.sampled_from(WRONG_DTYPES)),
    ),
)
COMMON = [st.none(), st.just(("duplicate",)), st.integers(0, 9).map(lambda i: ("replay", i))]
LOCAL_ACT = st.one_of(*COMMON, METRIC_FORGERY, RECORD_FORGERY, ARRAY_FORGERY)
DISTILL_ACT = st.one_of(*COMMON, METRIC_FORGERY, RECORD_FORGERY)
# another node's partition id in a hello leaves both nodes out (by design): not generated here
HELLO_ACT = st.one_of(
    st.none(), st.just(("duplicate",)), _metric_forgery(list(metric_ranges())), RECORD_FORGERY
)
READS = {
    "train.local": (METRICS_KEY,),
    "train.distill": (METRICS_KEY,),
    "query.hello": (METRICS_KEY, INFO_KEY),
}


def _forge_array(arr: Array, how: tuple) -> Array:
    kind, value = how
    fields = {"dtype": arr.dtype, "shape": tuple(arr.shape), "stype": arr.stype, "data": arr.data}
    if kind == "npy":
        return Array(value)
    if kind == "shape" and tuple(value) == fields["shape"]:
        value = (*value, 2)
    fields[{"stype": "stype", "bytes": "data", "shape": "shape", "dtype": "dtype"}[kind]] = value
    return Array(**fields)


def _apply(act: tuple, reply: Message, msg: Message, history: list[Message]):
    """The forgery ``act`` describes, on partition 1's honest ``reply``; None: send it as it is."""
    if act[0] == "duplicate":
        return "duplicate"
    if act[0] == "replay":
        return history[act[1] % len(history)]  # an earlier reply: the hello, or a past phase's
    if act[0] == "metric":
        reply.content[METRICS_KEY] = MetricRecord({**reply.content[METRICS_KEY], act[1]: act[2]})
        return reply
    kind = msg.metadata.message_type
    uploads = sorted(k for k, record in reply.content.items() if isinstance(record, ArrayRecord))
    read = (*uploads, *READS[kind]) if kind == "train.local" else READS[kind]
    if act[0] == "record":
        key = read[act[1] % len(read)]
        if act[2] == "missing":
            del reply.content[key]
        else:
            records = {"metric": MetricRecord({"x": 1.0}), "config": ConfigRecord({"x": "y"})}
            reply.content[key] = records.get(act[2], ArrayRecord())
        return reply
    if not uploads:  # an algorithm that uploads nothing: no array to forge
        return None
    key = uploads[act[1] % len(uploads)]
    arrays = dict(reply.content[key])
    name = sorted(arrays)[act[1] % len(arrays)]
    arrays[name] = _forge_array(arrays[name], act[2])
    reply.content[key] = ArrayRecord(arrays)
    return reply


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    algorithm=st.sampled_from(FUSIONS.names()),
    local=st.lists(LOCAL_ACT, min_size=2, max_size=2),
    distill=st.lists(DISTILL_ACT, min_size=2, max_size=2),
    hello=HELLO_ACT,
)
def test_whatever_a_client_replies_the_run_completes_and_records_each_bad_reply(
    algorithm, local, distill, hello
):
    cfg = tiny_config(algorithm=algorithm, models="mlp", **{"num-clients": 3})
    acts = {"train.local": local, "train.distill": distill, "query.hello": [hello]}

    def act(reply: Message, msg: Message, history: list[Message]):
        planned = acts[msg.metadata.message_type][max(0, int(msg.metadata.group_id) - 1)]
        return None if planned is None else _apply(planned, reply, msg, history)

    hostile = Hostile(cfg, act)
    results = run_hostile(cfg, hostile)
    assert len(results.rounds) == cfg.run.rounds
    left_out = hello is not None and hello[0] != "duplicate"  # a bad hello: the node takes no part
    assert (1 in results.payload["environment"]["client_devices"]) is not left_out
    reasons = refused(results, hostile)
    for key in hostile.tampered:
        assert key in reasons, (key, reasons)
    assert {partition for partition, _, _ in reasons} <= {1}  # nobody else is ever refused
    for record in results.rounds:
        assert {0, 2} <= set(record["client_acc"])
