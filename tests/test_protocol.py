"""One misbehaving client never ends the run: every field of every reply is checked
(fedkd/protocol.py); a bad reply is dropped and recorded in failed_clients."""

from __future__ import annotations

import math

import pytest
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict

from clients.client_app import make_client_app
from experiments.engines import run_inprocess
from fedkd.protocol import (
    METRICS_KEY,
    WEIGHTS_KEY,
    ProtocolError,
    checked_metrics,
    error_summary,
    partition_id_of,
)
from fedkd.results_files import load_results
from tests.conftest import tiny_config

BAD = 1  # the partition that misbehaves


def _with_metric(reply: Message, **values) -> Message:
    metrics = dict(reply.content[METRICS_KEY])
    metrics.update(values)
    reply.content[METRICS_KEY] = MetricRecord(metrics)
    return reply


def _empty_error(reply: Message, msg: Message) -> Message:
    return Message(Error(code=0, reason=""), reply_to=msg)


def _wrong_shaped_weights(reply: Message) -> Message:
    weights = reply.content[WEIGHTS_KEY].to_torch_state_dict()
    first = next(iter(weights))
    weights[first] = weights[first][:1]
    reply.content[WEIGHTS_KEY] = ArrayRecord(weights)
    return reply


SCENARIOS = {
    "partition id NaN": ("train.local", lambda r, m: _with_metric(r, **{"partition-id": math.nan}), "finite"),
    "partition id inf": ("train.local", lambda r, m: _with_metric(r, **{"partition-id": math.inf}), "finite"),
    "error, empty reason": ("train.local", _empty_error, "no reason given"),
    "absurd accuracy": ("train.distill", lambda r, m: _with_metric(r, **{"local-acc": 1e9}), "outside"),
    "another's partition id": (
        "train.local",
        lambda r, m: _with_metric(r, **{"partition-id": 0}),
        "partition",
    ),
}


class Misbehaving:
    """fedkd's real ClientApp, except that partition BAD's replies are tampered with."""

    def __init__(self, cfg, phase: str, tamper) -> None:
        self.app, self.phase, self.tamper = make_client_app(cfg), phase, tamper

    def __call__(self, msg: Message, context) -> Message:
        reply = self.app(msg, context)
        if int(context.node_config["partition-id"]) == BAD and msg.metadata.message_type == self.phase:
            return self.tamper(reply, msg)
        return reply


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_bad_reply_is_dropped_and_the_run_goes_on(scenario):
    phase, tamper, reason = SCENARIOS[scenario]
    cfg = tiny_config(**{"num-clients": 4})
    results = run_inprocess(cfg, client_app=Misbehaving(cfg, phase, tamper))
    assert len(results.rounds) == cfg.run.rounds
    for record in results.rounds:
        assert [f["phase"] for f in record["failed_clients"]] == [phase]
        assert reason in record["failed_clients"][0]["reason"]
        assert BAD not in record["client_acc"] and 0.0 < record["alma"] <= 1.0


def test_a_weight_upload_of_the_wrong_shape_is_dropped():
    cfg = tiny_config(algorithm="fedavg", models="mlp", **{"num-clients": 4})
    results = run_inprocess(
        cfg, client_app=Misbehaving(cfg, "train.local", lambda r, m: _wrong_shaped_weights(r))
    )
    for record in results.rounds:
        assert "shape" in record["failed_clients"][0]["reason"] and BAD not in record["client_acc"]


def test_a_hello_without_info_leaves_that_node_out_and_keeps_the_others():
    cfg = tiny_config(**{"num-clients": 4, "rounds": 1})
    no_info = Misbehaving(
        cfg,
        "query.hello",
        lambda r, m: Message(RecordDict({METRICS_KEY: r.content[METRICS_KEY]}), reply_to=m),
    )
    results = run_inprocess(cfg, client_app=no_info)
    assert results.payload["environment"]["client_devices"].keys() == {0, 2, 3}
    assert sorted(results.rounds[0]["client_acc"]) == [0, 2, 3]
    [refused] = results.payload["hello_failed_clients"]
    assert (refused["partition_id"], refused["phase"]) == (BAD, "query.hello")
    assert "device" in refused["reason"]


def test_two_nodes_claiming_one_partition_id_are_both_left_out():
    """Who is honest is unknowable, so the outcome must not depend on who answered first."""
    cfg = tiny_config(**{"num-clients": 4, "rounds": 1})
    results = run_inprocess(
        cfg, client_app=Misbehaving(cfg, "query.hello", lambda r, m: _with_metric(r, **{"partition-id": 0}))
    )
    assert results.payload["environment"]["client_devices"].keys() == {2, 3}
    assert sorted(results.rounds[0]["client_acc"]) == [2, 3]
    refused = results.payload["hello_failed_clients"]
    assert [f["partition_id"] for f in refused] == [0, 0] and len({f["node_id"] for f in refused}) == 2
    assert all("claimed by nodes" in f["reason"] for f in refused)


def test_a_run_whose_every_hello_is_refused_fails_and_says_why_for_each_node(tmp_path):
    """The file a failed start leaves is where its user looks: each node's refusal is there."""
    cfg = tiny_config(**{"rounds": 1, "out-dir": str(tmp_path)})
    client_app = make_client_app(cfg)

    def no_info(msg: Message, context) -> Message:
        reply = client_app(msg, context)
        if msg.metadata.message_type != "query.hello":
            return reply
        return Message(RecordDict({METRICS_KEY: reply.content[METRICS_KEY]}), reply_to=msg)

    with pytest.raises(RuntimeError, match="no client answered"):
        run_inprocess(cfg, client_app=no_info)
    saved = load_results(tmp_path)
    assert saved["status"] == "failed"
    assert sorted(f["partition_id"] for f in saved["hello_failed_clients"]) == [0, 1, 2]


def test_protocol_checks_golden():
    assert partition_id_of({"partition-id": 3.0}, 4) == 3
    for bad in (math.nan, math.inf, -1, 4, 1.5, True, "2"):
        with pytest.raises(ProtocolError):
            partition_id_of({"partition-id": bad}, 4)
    assert error_summary("") == "no reason given" and error_summary("a\nb") == "a"
    assert checked_metrics({"local-acc": 1, "other": "x"}) == {"local-acc": 1.0}
    with pytest.raises(ProtocolError, match="no 'local-acc'"):
        checked_metrics({}, ("local-acc",))
    with pytest.raises(ProtocolError, match="finite"):
        checked_metrics({"compute-seconds": float("nan")})


def test_the_inprocess_engine_honours_reply_timeout():
    """A client that hangs is dropped after reply-timeout; the others carry the round."""
    import time

    from fedkd.client_steps import training_data

    cfg = tiny_config(**{"num-clients": 3, "rounds": 1, "reply-timeout": 3.0, "workers": 2})
    for pid in range(3):
        training_data(cfg, pid)  # data built and cached first: only the hang may take long

    def hang(reply: Message, msg: Message) -> Message:
        time.sleep(8)
        return reply

    start = time.perf_counter()
    results = run_inprocess(cfg, client_app=Misbehaving(cfg, "train.local", hang))
    assert time.perf_counter() - start < 30
    failed = results.rounds[0]["failed_clients"]
    assert [f["partition_id"] for f in failed] == [BAD] and "reply-timeout=3" in failed[0]["reason"]
    assert sorted(results.rounds[0]["client_acc"]) == [0, 2]


def test_an_interrupted_run_says_so_in_its_results(tmp_path):
    """Ctrl-C mid-run: the rounds done are kept and the file is marked interrupted."""

    cfg = tiny_config(rounds=3, **{"out-dir": str(tmp_path)})
    calls = {"n": 0}

    def interrupt(reply: Message, msg: Message) -> Message:
        calls["n"] += 1
        if calls["n"] == 2:  # partition BAD's second train.local: round 2
            raise KeyboardInterrupt
        return reply

    with pytest.raises(KeyboardInterrupt):
        run_inprocess(cfg, client_app=Misbehaving(cfg, "train.local", interrupt))
    saved = load_results(tmp_path / "results.json")
    assert saved["status"] == "interrupted" and len(saved["rounds"]) == 1
    assert saved["final"]["round"] == 1
