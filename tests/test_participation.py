"""Partial participation, stragglers (reply timeout), the hello query, devices and node config."""

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from clients.client_app import make_client_app, resolve_config
from experiments.engines import run_experiment, task_identity
from fedkd.config import ConfigError
from fedkd.training import resolve_device
from server.inprocess.grid import InProcessGrid
from server.strategy import KnowledgeFusionStrategy
from tests.conftest import tiny_config


def test_fraction_samples_the_same_clients_every_time_and_at_least_min_replies():
    cfg = tiny_config(models="mlp", **{"num-clients": 6, "fraction": 0.5, "min-replies": 2, "rounds": 3})
    first, second = run_experiment(cfg), run_experiment(cfg)
    sampled = [r["participants"] for r in first.rounds]
    assert sampled == [r["participants"] for r in second.rounds]
    assert all(len(p) == 3 for p in sampled) and len({tuple(p) for p in sampled}) > 1
    for record in first.rounds:
        assert set(record["client_acc"]) == set(record["participants"])
        # weights are over the round's participants only (3 x 3, not 6 x 6), rows = students
        w = np.array(record["weights"])
        assert w.shape == (3, 3)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
    tiny = tiny_config(models="mlp", **{"num-clients": 6, "fraction": 0.1, "min-replies": 2})
    assert all(len(r["participants"]) == 2 for r in run_experiment(tiny).rounds)


class SlowNodeGrid(InProcessGrid):
    """A grid on which one node never answers in time."""

    def __init__(self, *args, silent_partition: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.silent = next(
            n for n in self.get_node_ids() if self.context(n).node_config["partition-id"] == silent_partition
        )

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        if timeout is None:
            return replies
        return [r for r in replies if r.metadata.src_node_id != self.silent]


def test_a_straggler_past_the_reply_timeout_is_recorded_and_the_round_goes_on():
    cfg = tiny_config(**{"reply-timeout": 5.0, "min-replies": 1})
    grid = SlowNodeGrid(make_client_app(cfg), 3, silent_partition=1)
    strategy = KnowledgeFusionStrategy(cfg)
    with task_identity(1):
        nodes = sorted(grid.get_node_ids())
        strategy.pid_of_node.update({n: grid.context(n).node_config["partition-id"] for n in nodes})
        record = strategy.run_round(grid, nodes, 1)
    late = [f for f in record["failed_clients"] if "no reply within reply-timeout=5 s" in f["reason"]]
    assert [f["partition_id"] for f in late] == [1]
    assert sorted(record["client_acc"]) == [0, 2]


def test_hello_records_each_clients_device():
    results = run_experiment(tiny_config(rounds=1))
    assert results.payload["environment"]["client_devices"] == {0: "cpu", 1: "cpu", 2: "cpu"}


def test_device_resolution_and_validation():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="device='tpu' is invalid"):
        tiny_config(device="tpu")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            resolve_device("cuda:0")


def test_supernode_node_config_sets_the_data_dir():
    cfg = tiny_config()
    ctx = Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 0, "data-dir": "/data/here"},
        state=RecordDict(),
        run_config={},
    )
    assert resolve_config(cfg, ctx).data.data_dir == "/data/here"


def test_bad_participation_settings():
    for overrides, fragment in [
        ({"fraction": 0}, "fraction=0.0 is invalid"),
        ({"reply-timeout": -1}, "reply-timeout=-1.0"),
        ({"client-gpus": -0.5}, "client-gpus=-0.5"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            tiny_config(**overrides)
    assert np.isclose(tiny_config(**{"client-gpus": 0.25}).run.client_gpus, 0.25)
