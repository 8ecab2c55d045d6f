"""Flower ClientApp: ``train.local`` and ``train.distill`` handlers over fedkd's client steps.

The model lives in ``context.state`` (never in globals: Ray reuses processes across virtual
clients). Data is rebuilt from (config, partition-id), so nothing but soft predictions and
metrics (and, for weight-uploading algorithms, the model) leaves the client.

Two mods sit between the handlers and the network; a reply passes the privacy mod first (noise
on the soft predictions), then the compression mod (top-k or quantisation of the noised values):
compressing after the noise is post-processing, so it costs no privacy, and no un-noised value
(say, which classes are a row's top k) ever leaves the client.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.compression_mod import make_compression_mod
from clients.privacy_mod import make_privacy_mod
from clients.records import partition_id, soft_record
from fedkd.atomic import atomic_write
from fedkd.checkpoints import latest, tagged
from fedkd.client_steps import StateDict, distill_step, local_step
from fedkd.config import ExperimentConfig
from fedkd.errors import RunFolderError
from fedkd.fusion import knowledge_rows
from fedkd.fusion_cards import Uploads
from fedkd.protocol import (
    CHECKPOINT_NOT_WRITTEN,
    CONFIG_KEY,
    INFO_KEY,
    KNOWLEDGE_KEY,
    METRICS_KEY,
    MODEL_KEY,
    SOFT,
    TARGET_KEY,
    WEIGHTS_KEY,
    dense_soft,
)
from fedkd.training import resolve_device


class _DropActorShutdownNotice(logging.Filter):
    """Flower's Ray actors log a WARNING ("Manually terminating ClientAppActor") each time a
    simulation ends them: the expected end, not news. This module runs in every actor."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Manually terminating")


logging.getLogger("flwr").addFilter(_DropActorShutdownNotice())
# Ray's ``ray.init`` tells every driver that its handling of GPU-less tasks will change one day: a
# tip for Ray's users, not fedkd's. Flower loads this module in the driver before ``ray.init``
# (``fedkd run`` and ``flwr run`` alike), so the filter is in place when the tip is raised.
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def resolve_config(bound: ExperimentConfig | None, context: Context) -> ExperimentConfig:
    """The config bound into the app (fedkd run), else the run_config (flwr run); then the
    node's own settings (data location)."""
    cfg = bound if bound is not None else ExperimentConfig.from_run_config(context.run_config)
    return resolve_node_config(cfg, context)


def resolve_node_config(cfg: ExperimentConfig, context: Context) -> ExperimentConfig:
    """A SuperNode may say where its data lives (``--node-config "data-dir=/data"``)."""
    data_dir = context.node_config.get("data-dir")
    return cfg.with_overrides({"data-dir": str(data_dir)}) if data_dir else cfg


def _client_stem(pid: int) -> str:
    return f"client-{pid}"


def _load_state(context: Context, settings: ConfigRecord, pid: int) -> StateDict | None:
    """The model in context.state; on a resumed run, the client's newest checkpoint of a recorded
    round (fedkd/checkpoints.py)."""
    if MODEL_KEY in context.state:
        return context.state[MODEL_KEY].to_torch_state_dict()
    folder, recorded = str(settings.get("checkpoint-dir", "")), int(settings.get("resume-round", 0))
    checkpoint = latest(folder, _client_stem(pid), ".pt", recorded) if folder and recorded > 0 else None
    return torch.load(checkpoint, weights_only=True) if checkpoint is not None else None


def _save_state(context: Context, state: StateDict, settings: ConfigRecord, pid: int) -> None:
    """Keep the model in context.state and, when the server asks, in a checkpoint tagged with the
    round it completes (current only once the server has recorded that round)."""
    context.state[MODEL_KEY] = ArrayRecord(state)
    folder = str(settings.get("checkpoint-dir", ""))
    if not folder:
        return
    checkpoint = tagged(folder, _client_stem(pid), int(settings["server-round"]), ".pt")
    try:
        atomic_write(checkpoint, lambda handle: torch.save(state, handle), binary=True)
    except OSError as exc:  # the server fails the run on this (fedkd/protocol.py)
        raise RunFolderError(f"{CHECKPOINT_NOT_WRITTEN}: {checkpoint}: {exc.strerror or exc}") from None


def _target(cfg: ExperimentConfig, msg: Message, server_round: int) -> np.ndarray | None:
    """The server's target in ``msg`` as (rows, D) with all-NaN rows where it holds none: the
    transfer rows of a distillation target, or the classes of per-class knowledge."""
    if TARGET_KEY not in msg.content:
        return None
    arrays = {name: arr.numpy() for name, arr in msg.content[TARGET_KEY].items()}
    return dense_soft(arrays, knowledge_rows(cfg, server_round), arrays[SOFT].shape[1], None)


def make_client_app(bound: ExperimentConfig | None = None) -> ClientApp:
    """A ClientApp; ``bound`` fixes the config (run_simulation passes no run_config)."""

    def resolve(context: Context) -> ExperimentConfig:
        return resolve_config(bound, context)

    # noise from the run seed only in fedkd's own simulations (config bound), else secret
    privacy = make_privacy_mod(resolve, seeded=bound is not None)
    # mods[0] is outermost: a reply is noised first, then compressed
    app = ClientApp(mods=[make_compression_mod(resolve), privacy])

    @app.query("hello")
    def hello(msg: Message, context: Context) -> Message:
        """Who am I (partition id) and what do I compute on: asked once before round 1."""
        cfg = resolve_config(bound, context)
        content = RecordDict(
            {
                METRICS_KEY: MetricRecord({"partition-id": partition_id(context)}),
                INFO_KEY: ConfigRecord({"device": str(resolve_device(cfg.train.device))}),
            }
        )
        return Message(content, reply_to=msg)

    @app.train("local")
    def train_local(msg: Message, context: Context) -> Message:
        cfg = resolve_config(bound, context)
        pid = partition_id(context)
        settings = msg.content[CONFIG_KEY]
        server_round = int(settings["server-round"])
        upload = Uploads.named(settings["upload"])  # what the server asks this round
        # weight averaging: start from the global model the server sent (when it sent one)
        state = msg.content[WEIGHTS_KEY].to_torch_state_dict() if WEIGHTS_KEY in msg.content else None
        result = local_step(
            cfg,
            pid,
            server_round,
            state if state is not None else _load_state(context, settings, pid),
            upload.predictions or upload.class_knowledge,
            _target(cfg, msg, server_round),  # data-free: the per-class knowledge of last round
        )
        context.state[MODEL_KEY] = ArrayRecord(result.state)  # mid-round: no checkpoint
        content = RecordDict({METRICS_KEY: MetricRecord({**result.metrics, "partition-id": pid})})
        if result.predictions is not None:
            content[KNOWLEDGE_KEY] = soft_record(result.predictions, result.counts)
        if upload.weights:
            content[WEIGHTS_KEY] = ArrayRecord(result.state)
        return Message(content, reply_to=msg)

    @app.train("distill")
    def train_distill(msg: Message, context: Context) -> Message:
        cfg = resolve_config(bound, context)
        pid = partition_id(context)
        settings = msg.content[CONFIG_KEY]
        target = _target(cfg, msg, int(settings["server-round"]))
        replacement = None
        if WEIGHTS_KEY in msg.content:
            replacement = msg.content[WEIGHTS_KEY].to_torch_state_dict()
        evaluate = bool(settings.get("evaluate", True))
        state = _load_state(context, settings, pid)
        result = distill_step(cfg, pid, int(settings["server-round"]), state, target, replacement, evaluate)
        _save_state(context, result.state, settings, pid)
        metrics = MetricRecord({**result.metrics, "partition-id": pid})
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)

    return app


# Entry point for `flwr run` and SuperNodes: config comes from the run_config.
app = make_client_app()
