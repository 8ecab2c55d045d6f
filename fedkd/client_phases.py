"""The optimiser phases a client round is made of: pretraining on the labelled transfer set,
private epochs, makeup steps and distillation on the transfer set, each with its own batch order
from (seed, phase, client, round) and a fresh optimiser (fedkd/training.py). A private phase's
loss is cross-entropy, plus a data-free algorithm's regulariser while the client holds per-class
knowledge (``private_loss``)."""

from __future__ import annotations

import numpy as np
import torch

from fedkd.budget import ComputeBudget
from fedkd.config import ExperimentConfig
from fedkd.data.federation import ClientData
from fedkd.run_plan import run_plan
from fedkd.seeding import torch_generator
from fedkd.training import CROSS_ENTROPY, FitStats, ModelLoss, distill, local_train


def rows_of(x: torch.Tensor, rows: np.ndarray | None) -> torch.Tensor:
    """The transfer rows of this round: all (None) or the algorithm's subset."""
    return x if rows is None else x[torch.from_numpy(rows)]


def private_loss(cfg: ExperimentConfig, model: torch.nn.Module, knowledge: np.ndarray | None) -> ModelLoss:
    """The loss of a private step: cross-entropy, plus a data-free algorithm's regulariser while
    the client holds per-class ``knowledge`` from the server."""
    if knowledge is None or np.isnan(knowledge).all():
        return CROSS_ENTROPY
    return run_plan(cfg).algorithm.private_loss(cfg, model, knowledge)


def pretrain_public(
    cfg: ExperimentConfig, pid: int, model: torch.nn.Module, data: ClientData, epochs: int
) -> FitStats:
    """Supervised training on the labelled transfer set before round 1 (FedMD's transfer
    learning), the same for every algorithm when asked for."""
    t = cfg.train
    return local_train(
        model,
        data.transfer_x,
        data.transfer_y,
        epochs=epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=torch_generator(cfg.run.seed, "pretrain", pid),
    )


def distill_transfer(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    model: torch.nn.Module,
    data: ClientData,
    target: np.ndarray,
    budget: ComputeBudget,
) -> FitStats:
    rows = run_plan(cfg).algorithm.transfer_rows(cfg, server_round)
    x = rows_of(data.transfer_x, rows)  # (N, C, H, W): this round's transfer rows
    target = np.asarray(target, dtype=np.float64)
    present = ~np.isnan(target).any(axis=1)  # (N,): rows that have a target
    if not present.all():
        x, target = x[torch.from_numpy(present)], target[present]
    return distill(
        model,
        x,
        torch.from_numpy(np.asarray(target, dtype=np.float32)),
        temperature=budget.temperature,
        epochs=budget.distill_epochs,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.learning_rate,
        generator=torch_generator(cfg.run.seed, "distill", pid, server_round),
    )


def makeup(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    model: torch.nn.Module,
    data: ClientData,
    steps: int,
    loss: ModelLoss = CROSS_ENTROPY,
) -> FitStats:
    """``steps`` cross-entropy mini-batches on private data: the steps a client did not spend
    distilling this round (budget-match = steps), batch order from its own stream."""
    if steps <= 0:
        return FitStats(float("nan"), 0, 0)
    t = cfg.train
    return local_train(
        model,
        data.train_x,
        data.train_y,
        epochs=1,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=torch_generator(cfg.run.seed, "makeup", pid, server_round),
        samples_per_epoch=steps * t.batch_size,
        loss=loss,
    )


def train_private(
    cfg: ExperimentConfig,
    pid: int,
    server_round: int,
    model: torch.nn.Module,
    data: ClientData,
    phase: str,
    epochs: int,
    loss: ModelLoss = CROSS_ENTROPY,
) -> FitStats:
    """Cross-entropy (or ``loss``) epochs on the private split, batch order from (seed, phase,
    client, round). An epoch is as long as the whole private partition, guard slice included (the
    budget)."""
    t = cfg.train
    return local_train(
        model,
        data.train_x,
        data.train_y,
        epochs=epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=torch_generator(cfg.run.seed, phase, pid, server_round),
        samples_per_epoch=len(data.train_y) + len(data.guard_y),
        loss=loss,
    )
