"""The round loop against scripted client replies: failures and bad knowledge are dropped."""

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

from clients.client_app import soft_record
from experiments.engines import task_identity
from fedkd.knowledge import softmax
from fedkd.protocol import KNOWLEDGE_KEY, METRICS_KEY, TARGET_KEY
from server.inprocess.grid import InProcessGrid
from server.round_state import payload_bytes
from server.strategy import KnowledgeFusionStrategy
from tests.conftest import tiny_config

BROKEN, NAN, OFF_SIMPLEX, WRONG_SHAPE = 1, 2, 3, 5


class ScriptedClients:
    """A stand-in ClientApp: valid soft predictions, except for the scripted misbehaviours."""

    def __init__(self, transfer_size: int):
        self.n = transfer_size
        self.targets: dict[int, bool] = {}

    def __call__(self, message: Message, context) -> Message:
        pid = int(context.node_config["partition-id"])
        if message.metadata.message_type == "train.local":
            if pid == BROKEN:
                raise RuntimeError("disk on fire")
            soft = softmax(np.random.default_rng(pid).normal(size=(self.n, 10)))
            if pid == NAN:
                soft[3, 4] = np.nan
            if pid == OFF_SIMPLEX:
                soft = soft * 1.5
            if pid == WRONG_SHAPE:
                soft = soft[:, :9]
            content = RecordDict(
                {
                    METRICS_KEY: MetricRecord({"partition-id": pid, "compute-seconds": 0.25}),
                    KNOWLEDGE_KEY: soft_record(soft),
                }
            )
            return Message(content, reply_to=message)
        self.targets[pid] = TARGET_KEY in message.content
        metrics = MetricRecord(
            {
                "partition-id": pid,
                "local-acc": 0.1 * (pid + 1),
                "local-test-size": 20,
                "global-acc": 0.5,
                "compute-seconds": 0.25,
            }
        )
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=message)


def _round(cfg, clients):
    grid = InProcessGrid(clients, cfg.data.num_clients)
    strategy = KnowledgeFusionStrategy(cfg)
    with task_identity(1):
        return strategy.run_round(grid, sorted(grid.get_node_ids()), 1)


def test_failed_nan_and_malformed_replies_are_dropped_and_the_round_goes_on():
    cfg = tiny_config(**{"num-clients": 6, "min-replies": 2})
    clients = ScriptedClients(cfg.data.transfer_size)
    record = _round(cfg, clients)
    reasons = {f["partition_id"]: f["reason"] for f in record["failed_clients"]}
    assert len(record["failed_clients"]) == 4
    assert "disk on fire" in reasons[None]  # failed before it could say who it is
    assert "NaN" in reasons[NAN]
    assert "off the simplex" in reasons[OFF_SIMPLEX]
    assert "shape" in reasons[WRONG_SHAPE]
    # only valid clients (0 and 4) were fused, distilled and scored; with no hello, the weights'
    # axes are the clients that answered
    assert record["participants"] == [0, 4]
    np.testing.assert_allclose(np.array(record["weights"]).sum(axis=1), 1.0)
    assert sorted(clients.targets) == [0, 4]
    assert record["client_acc"] == {0: pytest.approx(0.1), 4: pytest.approx(0.5)}
    assert record["alma"] == pytest.approx(0.3)
    assert record["alma_min"] == pytest.approx(0.1)
    assert record["compute_s"] == pytest.approx(0.25 * 5 + 0.25 * 2)
    assert record["bytes_up"] > 0 and record["bytes_down"] > 0


def test_too_few_valid_replies_means_no_fusion_but_clients_still_evaluate():
    cfg = tiny_config(**{"num-clients": 4, "min-replies": 3})
    clients = ScriptedClients(cfg.data.transfer_size)
    record = _round(cfg, clients)  # valid: 0 only (1 broken, 2 NaN, 3 off simplex)
    assert clients.targets == {0: False}
    assert not np.array(record["weights"]).any()
    assert list(record["client_acc"]) == [0]


def test_payload_bytes_counts_array_data():
    with task_identity(1):
        msg = Message(
            RecordDict({"t": soft_record(np.ones((5, 10)))}), dst_node_id=1, message_type="train.local"
        )
    # float32 payload plus the small .npy header that Flower's Array carries
    assert 5 * 10 * 4 <= payload_bytes([msg]) < 5 * 10 * 4 + 256


def test_a_round_where_every_client_fails_stops_the_run():
    cfg = tiny_config(models="mlp", **{"num-clients": 2, "min-replies": 1})

    def broken(message, context):
        raise RuntimeError("no GPU")

    grid = InProcessGrid(broken, 2)
    with (
        task_identity(1),
        pytest.raises(RuntimeError, match="round 1: no client completed the round.*no GPU"),
    ):
        KnowledgeFusionStrategy(cfg).run_round(grid, sorted(grid.get_node_ids()), 1)
