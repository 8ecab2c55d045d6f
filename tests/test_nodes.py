"""`flwr run` with too few SuperNodes fails fast, with one line saying how many were expected and found."""

import io
import logging
import time

import pytest
from flwr.app import Context, RecordDict
from flwr.common.logger import log as flwr_log

from experiments.engines import task_identity
from server.nodes import MissingNodes, one_line_missing_nodes, wait_for_nodes
from server.server_app import app as flwr_server_app
from tests.conftest import tiny_config


class FakeGrid:
    """Node ids only: ``ids`` after ``arrive_after`` seconds, none before."""

    def __init__(self, ids, arrive_after=0.0):
        self.ids, self.ready_at = list(ids), time.monotonic() + arrive_after

    def get_node_ids(self):
        return self.ids if time.monotonic() >= self.ready_at else []


def test_nodes_that_arrive_within_the_wait_are_returned_sorted():
    assert wait_for_nodes(FakeGrid([9, 3, 5], arrive_after=0.2), 3, timeout_s=5) == [3, 5, 9]


def test_too_few_nodes_fail_within_min_nodes_wait_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(**{"num-clients": 3, "min-nodes-wait": 0.3})
    run_config = {**cfg.to_run_config(), "out-dir": ""}  # the flwr run path: config from run_config
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    start = time.monotonic()
    with task_identity(1), pytest.raises(MissingNodes) as err:
        flwr_server_app(FakeGrid([11, 22]), context)
    assert time.monotonic() - start < 3
    message = str(err.value)
    assert "expected num-clients=3 nodes, found 2 after waiting 0.3 s" in message and "\n" not in message
    assert isinstance(err.value, Exception)  # Flower turns it into a non-zero exit code
    assert list(tmp_path.iterdir()) == []  # failed before any folder or file was made


def test_flowers_exception_log_for_missing_nodes_is_one_line_without_traceback():
    one_line_missing_nodes()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger("flwr").addHandler(handler)
    try:
        for exc in (MissingNodes("expected num-clients=10 nodes, found 2"), ValueError("other")):
            try:
                raise exc
            except Exception as raised:  # noqa: BLE001 - as Flower's run_serverapp does
                flwr_log(logging.ERROR, "%s raised an exception", "ServerApp", exc_info=raised)
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    first, rest = stream.getvalue().split("\n", 1)
    assert first == "ERROR ServerApp raised an exception: expected num-clients=10 nodes, found 2"
    assert rest.startswith("ERROR ServerApp raised an exception\nTraceback")  # other errors keep theirs
