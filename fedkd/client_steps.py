"""The two things a client does each round, as plain functions of (config, partition, state).

Flower handlers (clients/) and the plain benchmark loop (bench/) both call these, so the
engines differ only in how messages move, never in what is computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from fedkd.config import ExperimentConfig
from fedkd.data.federation import ClientData, client_data
from fedkd.fusion import FUSIONS
from fedkd.models import architecture_for, build_model
from fedkd.seeding import torch_generator
from fedkd.training import accuracy, distill, local_train, mixed_precision, predict_proba, resolve_device

StateDict = dict[str, torch.Tensor]


@dataclass
class StepResult:
    state: StateDict
    predictions: np.ndarray | None  # (N_t, C) soft predictions at temperature T
    metrics: dict[str, float]


@contextmanager
def client_compute(cfg: ExperimentConfig) -> Iterator[None]:
    """Pin intra-op threads (results then do not depend on the host's core count) and set
    the mixed-precision mode for the loops run inside."""
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.train.client_threads)
    try:
        with mixed_precision(cfg.train.mixed_precision):
            yield
    finally:
        torch.set_num_threads(before)


def _model(cfg: ExperimentConfig, pid: int, data: ClientData, state: StateDict | None) -> torch.nn.Module:
    arch = architecture_for(cfg.model.models, pid, cfg.data.num_clients)
    model = build_model(arch, data.input_shape, data.num_classes, cfg.run.seed, pid)
    if state is not None:
        model.load_state_dict(state)
    return model.to(resolve_device(cfg.train.device))


def _snapshot(model: torch.nn.Module) -> StateDict:
    """A CPU copy of the weights (what goes into context.state and over the wire)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _data(cfg: ExperimentConfig, pid: int) -> ClientData:
    guarded = FUSIONS.get(cfg.fusion.algorithm).guarded
    return client_data(cfg.data, cfg.run.seed, pid, cfg.fusion.guard_fraction if guarded else 0.0)


def local_step(
    cfg: ExperimentConfig, pid: int, server_round: int, state: StateDict | None, predict: bool
) -> StepResult:
    """Train on private data; optionally return soft predictions on the transfer set."""
    start = time.perf_counter()
    data = _data(cfg, pid)
    t = cfg.train
    with client_compute(cfg):
        model = _model(cfg, pid, data, state)
        loss = _train_private(cfg, pid, server_round, model, data, "local", t.local_epochs)
        preds = predict_proba(model, data.transfer_x, t.temperature) if predict else None
    return StepResult(
        _snapshot(model),
        preds,
        {
            "train-loss": loss,
            "num-examples": float(len(data.train_y)),
            "compute-seconds": time.perf_counter() - start,
        },
    )


def distill_step(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    state: StateDict | None,
    target: np.ndarray | None,
    replacement: StateDict | None = None,
) -> StepResult:
    """Distil from a personalised target (if any), revisit private data, then evaluate.

    ``replacement``: weights to adopt instead (weight-averaging baselines). For a guarded
    algorithm, a distillation that lowers accuracy on the guard slice by more than the
    tolerance is undone (metric ``rolled-back`` = 1).
    """
    start = time.perf_counter()
    data = _data(cfg, pid)
    metrics: dict[str, float] = {}
    with client_compute(cfg):
        model = _model(cfg, pid, data, replacement if replacement is not None else state)
        if target is not None:
            guarded = len(data.val_y) > 0
            if guarded:
                before, snapshot = accuracy(model, data.val_x, data.val_y), _snapshot(model)
            metrics["distill-loss"] = _distill_and_revisit(cfg, pid, server_round, model, data, target)
            if guarded:
                after = accuracy(model, data.val_x, data.val_y)
                rolled_back = after < before - cfg.fusion.guard_tolerance
                if rolled_back:
                    model.load_state_dict(snapshot)
                metrics["rolled-back"] = float(rolled_back)
        metrics["local-acc"] = accuracy(model, data.test_x, data.test_y)
        metrics["global-acc"] = accuracy(model, data.global_x, data.global_y)
    metrics["compute-seconds"] = time.perf_counter() - start
    return StepResult(_snapshot(model), None, metrics)


def _distill_and_revisit(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    model: torch.nn.Module,
    data: ClientData,
    target: np.ndarray,
) -> float:
    t = cfg.train
    loss = distill(
        model,
        data.transfer_x,
        torch.from_numpy(np.asarray(target, dtype=np.float32)),
        temperature=t.temperature,
        epochs=t.distill_epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=torch_generator(cfg.run.seed, "distill", pid, server_round),
    )
    if t.revisit_epochs > 0:
        _train_private(cfg, pid, server_round, model, data, "revisit", t.revisit_epochs)
    return loss


def _train_private(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    model: torch.nn.Module,
    data: ClientData,
    phase: str,
    epochs: int,
) -> float:
    """Cross-entropy epochs on the private split, batch order from (seed, phase, client, round)."""
    t = cfg.train
    return local_train(
        model,
        data.train_x,
        data.train_y,
        epochs=epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=torch_generator(cfg.run.seed, phase, pid, server_round),
    )
