"""The ClientApp handlers called directly, as a SuperNode would call them."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.client_app import make_client_app, soft_record
from experiments.engines import task_identity
from fedkd.protocol import CONFIG_KEY, KNOWLEDGE_KEY, METRICS_KEY, MODEL_KEY, TARGET_KEY, WEIGHTS_KEY
from tests.conftest import tiny_config


def _context(cfg, pid, run_config=None):
    return Context(
        run_id=1,
        node_id=100 + pid,
        node_config={"partition-id": pid, "num-partitions": 3},
        state=RecordDict(),
        run_config=run_config or {},
    )


def _msg(kind, content):
    with task_identity(1):
        msg = Message(content, dst_node_id=101, message_type=kind, group_id="1")
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def _local(app, ctx, server_round=1, upload="predictions"):
    content = RecordDict({CONFIG_KEY: ConfigRecord({"server-round": server_round, "upload": upload})})
    return app(_msg("train.local", content), ctx)


def test_train_local_returns_soft_predictions_and_keeps_model_in_state():
    cfg = tiny_config()
    app, ctx = make_client_app(cfg), _context(cfg, 1)
    reply = _local(app, ctx)
    soft = reply.content[KNOWLEDGE_KEY]["soft"].numpy()
    assert soft.shape == (cfg.data.transfer_size, 10) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    metrics = reply.content[METRICS_KEY]
    assert metrics["partition-id"] == 1 and metrics["num-examples"] > 0
    assert MODEL_KEY in ctx.state
    first = ctx.state[MODEL_KEY].to_torch_state_dict()
    _local(app, ctx, server_round=2)
    second = ctx.state[MODEL_KEY].to_torch_state_dict()
    assert any(not (first[k] == second[k]).all() for k in first), "round 2 must continue from round 1's model"


def test_train_local_without_predict_sends_no_knowledge():
    cfg = tiny_config(algorithm="local")
    reply = _local(make_client_app(cfg), _context(cfg, 0), upload="nothing")
    assert KNOWLEDGE_KEY not in reply.content and WEIGHTS_KEY not in reply.content


def test_train_local_uploads_weights_when_asked():
    cfg = tiny_config(algorithm="fedavg", models="cnn-s")
    ctx = _context(cfg, 0)
    reply = _local(make_client_app(cfg), ctx, upload="weights")
    assert KNOWLEDGE_KEY not in reply.content
    sent = reply.content[WEIGHTS_KEY].to_torch_state_dict()
    kept = ctx.state[MODEL_KEY].to_torch_state_dict()
    assert sent.keys() == kept.keys() and all((sent[k] == kept[k]).all() for k in sent)


def test_config_comes_from_run_config_when_not_bound():
    cfg = tiny_config()
    reply = _local(make_client_app(None), _context(cfg, 0, run_config=cfg.to_run_config()))
    assert reply.content[KNOWLEDGE_KEY]["soft"].numpy().shape == (cfg.data.transfer_size, 10)


def test_train_distill_uses_target_and_reports_accuracies():
    cfg = tiny_config()
    app = make_client_app(cfg)
    with_target, without = _context(cfg, 2), _context(cfg, 2)
    soft = _local(app, with_target).content[KNOWLEDGE_KEY]["soft"].numpy()
    _local(app, without)
    uniform = np.full_like(soft, 0.1)
    settings = ConfigRecord({"server-round": 1})
    r1 = app(
        _msg("train.distill", RecordDict({CONFIG_KEY: settings, TARGET_KEY: soft_record(uniform)})),
        with_target,
    )
    r2 = app(_msg("train.distill", RecordDict({CONFIG_KEY: settings})), without)
    m1, m2 = r1.content[METRICS_KEY], r2.content[METRICS_KEY]
    assert "distill-loss" in m1 and "distill-loss" not in m2
    for m in (m1, m2):
        assert 0.0 <= m["local-acc"] <= 1.0 and 0.0 <= m["global-acc"] <= 1.0
    a, b = with_target.state[MODEL_KEY].to_torch_state_dict(), without.state[MODEL_KEY].to_torch_state_dict()
    assert any(not (a[k] == b[k]).all() for k in a)


def test_unknown_action_is_rejected_by_flower():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="No train function registered with name 'bogus'"):
        make_client_app(cfg)(_msg("train.bogus", RecordDict()), _context(cfg, 0))
