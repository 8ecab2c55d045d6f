"""The two things a client does each round, as plain functions of (config, partition, state).

Flower handlers (clients/) and the plain benchmark loop (bench/) both call these, so the
engines differ only in how messages move, never in what is computed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from fedkd.client_phases import (
    ClientRound,
    distill_transfer,
    makeup,
    pretrain_public,
    private_loss,
    rows_of,
    train_private,
)
from fedkd.config import ExperimentConfig
from fedkd.data.federation import ClientData, client_data
from fedkd.metric_specs import computed
from fedkd.models import architecture_for, build_model
from fedkd.run_plan import run_plan
from fedkd.training import (
    FitStats,
    accuracy,
    pinned_compute,
    predict_proba,
    resolve_device,
)

StateDict = dict[str, torch.Tensor]


@dataclass
class StepResult:
    state: StateDict
    # (N_t, C) soft predictions at temperature T, NaN rows: withheld; data-free algorithms: (C, D)
    # per-class knowledge, NaN rows: classes the client does not hold
    predictions: np.ndarray | None
    metrics: dict[str, float]
    counts: np.ndarray | None = None  # (C,) private samples per class, when the algorithm sends them


@contextmanager
def client_compute(cfg: ExperimentConfig) -> Iterator[None]:
    """Pinned threads and the mixed-precision mode for the loops run inside (training.py)."""
    with pinned_compute(cfg.train.client_threads, cfg.train.mixed_precision):
        yield


def _model(cfg: ExperimentConfig, pid: int, data: ClientData, state: StateDict | None) -> torch.nn.Module:
    arch = architecture_for(cfg.model.models, pid, cfg.data.num_clients)
    model = build_model(arch, data.input_shape, data.num_classes, cfg.run.seed, cfg.model.projection_width)
    if state is not None:
        model.load_state_dict(state)
    return model.to(resolve_device(cfg.train.device))


def _snapshot(model: torch.nn.Module) -> StateDict:
    """A CPU copy of the weights (what goes into context.state and over the wire)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def training_data(cfg: ExperimentConfig, pid: int) -> ClientData:
    """The client's tensors as its algorithm trains on them (guard slice held out when guarded)."""
    guarded = run_plan(cfg).algorithm.guarded
    return client_data(cfg.data, cfg.run.seed, pid, cfg.fusion.guard_fraction if guarded else 0.0)


def local_step(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    state: StateDict | None,
    predict: bool,
    knowledge: np.ndarray | None = None,
) -> StepResult:
    """Train on private data (the budget's local epochs); optionally return soft predictions
    on the transfer set at the algorithm's temperature, with the rows its client-side selector
    withholds (``upload_mask``) set to NaN. Data-free algorithms: the private steps are
    regularised towards the per-class ``knowledge`` (C, D) the server sent (when it sent any), and
    the upload is the client's per-class knowledge."""
    start = time.perf_counter()
    data = training_data(cfg, pid)
    budget = run_plan(cfg).budget
    algorithm = run_plan(cfg).algorithm
    rows = algorithm.transfer_rows(cfg, server_round)
    counts = None
    with client_compute(cfg):
        model = _model(cfg, pid, data, state)
        r = ClientRound(cfg, pid, server_round, data, model)
        loss = private_loss(r, knowledge)
        pretrain = (
            pretrain_public(r, budget.pretrain_epochs)
            if state is None and budget.pretrain_epochs > 0
            else FitStats(float("nan"), 0, 0)
        )
        fit = train_private(r, "local", budget.local_epochs, loss)
        samples, steps = fit.samples, fit.steps
        if budget.revisit_before_upload:  # weight averaging: every private step before the upload
            assert knowledge is None, "weight-averaging algorithms hold no per-class knowledge"
            for phase in (
                train_private(r, "revisit", budget.revisit_epochs),
                makeup(r, budget.makeup_steps(0)),
            ):
                samples, steps = samples + phase.samples, steps + phase.steps
        if predict and algorithm.uploads_class_knowledge:
            preds, counts = algorithm.class_knowledge(cfg, model, data)
            mask = None
        else:
            preds = (
                predict_proba(model, rows_of(data.transfer_x, rows), budget.temperature) if predict else None
            )
            mask = algorithm.upload_mask(cfg, pid, data, rows) if predict else None
    if preds is not None and mask is not None:
        preds[~mask] = np.nan  # (N_t, C): withheld rows are not sent
    return StepResult(
        _snapshot(model),
        preds,
        reported(
            {
                "train-loss": fit.loss,
                "num-examples": float(len(data.train_y)),
                "private-samples": float(samples),
                "private-steps": float(steps),
                "pretrain-steps": float(pretrain.steps),
                "compute-seconds": time.perf_counter() - start,
            }
        ),
        counts,
    )


def distill_step(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    state: StateDict | None,
    target: np.ndarray | None,
    replacement: StateDict | None = None,
    evaluate: bool = True,
) -> StepResult:
    """The client's second phase of a round, in named steps: start from its own model or adopt the
    server's average (``replacement``, weight averaging), distil from its personalised target
    (if any; guarded algorithms roll a harmful distillation back), revisit private data (whether
    or not a target came: the budget is the same for every algorithm), then evaluate. A target's
    NaN rows (withheld by a selective algorithm) are not distilled on. A data-free algorithm's
    target is per-class knowledge: no distillation, a regulariser of the private steps."""
    start = time.perf_counter()
    data = training_data(cfg, pid)
    budget = run_plan(cfg).budget
    metrics: dict[str, float] = {
        "private-samples": 0.0,
        "transfer-samples": 0.0,
        "private-steps": 0.0,
        "transfer-steps": 0.0,
    }
    knowledge = None
    if run_plan(cfg).algorithm.uploads_class_knowledge:
        knowledge, target = target, None
    if target is not None and np.isnan(target).all():
        target = None  # no row has a target: nothing to distil on
    with client_compute(cfg):
        model = _model(cfg, pid, data, adopted_weights(state, replacement))
        r = ClientRound(cfg, pid, server_round, data, model)
        loss = private_loss(r, knowledge)
        if target is not None and budget.distill_epochs > 0:
            metrics.update(distill_from_target(r, target))
        if not budget.revisit_before_upload:  # private steps after the fusion step
            left = budget.makeup_steps(int(metrics["transfer-steps"]))
            for phase in (makeup(r, left, loss), train_private(r, "revisit", budget.revisit_epochs, loss)):
                metrics["private-samples"] += phase.samples
                metrics["private-steps"] += phase.steps
        if evaluate:
            metrics.update(evaluate_client(model, data))
    metrics["compute-seconds"] = time.perf_counter() - start
    return StepResult(_snapshot(model), None, reported(metrics))


def adopted_weights(state: StateDict | None, replacement: StateDict | None) -> StateDict | None:
    """The weights the phase starts from: the server's average when it sent one (weight
    averaging adopts the global model), else the client's own."""
    return replacement if replacement is not None else state


def distill_from_target(r: ClientRound, target: np.ndarray) -> dict[str, float]:
    """Distil on the transfer set towards ``target``. With a guard slice (guarded algorithms), a
    distillation that lowers guard accuracy by more than the tolerance is undone (metric
    ``rolled-back`` = 1), before the revisit."""
    data, model = r.data, r.model
    guarded = len(data.guard_y) > 0
    if guarded:
        before, snapshot = accuracy(model, data.guard_x, data.guard_y), _snapshot(model)
    fit = distill_transfer(r, target)
    metrics = {
        "distill-loss": fit.loss,
        "transfer-samples": float(fit.samples),
        "transfer-steps": float(fit.steps),
    }
    if guarded:
        rolled_back = accuracy(model, data.guard_x, data.guard_y) < before - r.cfg.fusion.guard_tolerance
        if rolled_back:
            model.load_state_dict(snapshot)
        metrics["rolled-back"] = float(rolled_back)
    return metrics


def evaluate_client(model: torch.nn.Module, data: ClientData) -> dict[str, float]:
    """Accuracy on the client's own local test split, on its label-mix-matched sample of the test
    set (the headline ALMA's term), on its validation split (what choices are made on), and on the
    global test set. Splits that are off (size 0) are not reported."""
    metrics = {
        "local-acc": accuracy(model, data.test_x, data.test_y),
        "local-test-size": float(len(data.test_y)),
        "global-acc": accuracy(model, data.global_x, data.global_y),
    }
    for name, x, y in (("matched", data.matched_x, data.matched_y), ("val", data.val_x, data.val_y)):
        if len(y):
            metrics[f"{name}-acc"] = accuracy(model, x, y)
            metrics[f"{name}-size"] = float(len(y))
    measured = computed()
    if measured:
        was_training = model.training
        model.eval()
        with torch.no_grad():  # a measurement: no autograd, no BatchNorm statistics updated
            for spec in measured:
                metrics[spec.key] = float(spec.compute(model, data))
        model.train(was_training)
    return metrics


def reported(metrics: dict[str, float]) -> dict[str, float]:
    """What a client sends: its finite metrics (a loss over no step, or of a diverged model, is
    not a number and is left out rather than refused by the server)."""
    return {key: value for key, value in metrics.items() if math.isfinite(value)}
