"""The optimiser phases a client round is made of: pretraining on the labelled transfer set,
private epochs, makeup steps and distillation on the transfer set, each with its own batch order
from (seed, phase, client, round) and a fresh optimiser (fedkd/training.py). A private phase's
loss is cross-entropy, plus a data-free algorithm's regulariser while the client holds per-class
knowledge (``private_loss``). Every phase reads one ``ClientRound``: the client's round, resolved
once (config, plan, partition, round, data, model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedkd.config import ExperimentConfig
from fedkd.data.federation import ClientData
from fedkd.run_plan import RunPlan, run_plan
from fedkd.seeding import torch_generator
from fedkd.training import CROSS_ENTROPY, FitStats, ModelLoss, distill, local_train


@dataclass(frozen=True)
class ClientRound:
    """One client's round as its phases see it."""

    cfg: ExperimentConfig
    pid: int  # the client's partition id
    server_round: int
    data: ClientData
    model: torch.nn.Module

    @property
    def plan(self) -> RunPlan:
        return run_plan(self.cfg)

    def batches(self, phase: str) -> torch.Generator:
        """The batch order of ``phase`` this round: its own stream of (seed, phase, client, round)."""
        return torch_generator(self.cfg.run.seed, phase, self.pid, self.server_round)


def rows_of(x: torch.Tensor, rows: np.ndarray | None) -> torch.Tensor:
    """The transfer rows of this round: all (None) or the algorithm's subset."""
    return x if rows is None else x[torch.from_numpy(rows)]


def private_loss(r: ClientRound, knowledge: np.ndarray | None) -> ModelLoss:
    """The loss of a private step: cross-entropy, plus a data-free algorithm's regulariser while
    the client holds per-class ``knowledge`` from the server."""
    if knowledge is None or np.isnan(knowledge).all():
        return CROSS_ENTROPY
    return r.plan.algorithm.private_loss(r.cfg, r.model, knowledge)


def pretrain_public(r: ClientRound, epochs: int) -> FitStats:
    """Supervised training on the labelled transfer set before round 1 (FedMD's transfer
    learning), the same for every algorithm when asked for."""
    t = r.cfg.train
    return local_train(
        r.model,
        r.data.transfer_x,
        r.data.transfer_y,
        epochs=epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=torch_generator(r.cfg.run.seed, "pretrain", r.pid),
    )


def distill_transfer(r: ClientRound, target: np.ndarray) -> FitStats:
    """Distil on this round's transfer rows towards the (N, C) ``target``; its NaN rows (no
    target there) are left out."""
    rows = r.plan.algorithm.transfer_rows(r.cfg, r.server_round)
    x = rows_of(r.data.transfer_x, rows)  # (N, C, H, W): this round's transfer rows
    target = np.asarray(target, dtype=np.float64)
    present = ~np.isnan(target).any(axis=1)  # (N,): rows that have a target
    if not present.all():
        x, target = x[torch.from_numpy(present)], target[present]
    budget = r.plan.budget
    return distill(
        r.model,
        x,
        torch.from_numpy(np.asarray(target, dtype=np.float32)),
        temperature=budget.temperature,
        epochs=budget.distill_epochs,
        batch_size=r.cfg.train.batch_size,
        lr=r.cfg.train.learning_rate,
        generator=r.batches("distill"),
    )


def makeup(r: ClientRound, steps: int, loss: ModelLoss = CROSS_ENTROPY) -> FitStats:
    """``steps`` cross-entropy mini-batches on private data: the steps a client did not spend
    distilling this round (budget-match = steps), batch order from its own stream."""
    if steps <= 0:
        return FitStats(float("nan"), 0, 0)
    t = r.cfg.train
    return local_train(
        r.model,
        r.data.train_x,
        r.data.train_y,
        epochs=1,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=r.batches("makeup"),
        samples_per_epoch=steps * t.batch_size,
        loss=loss,
    )


def train_private(r: ClientRound, phase: str, epochs: int, loss: ModelLoss = CROSS_ENTROPY) -> FitStats:
    """Cross-entropy (or ``loss``) epochs on the private split, batch order from (seed, phase,
    client, round). An epoch is as long as the whole private partition, guard slice included (the
    budget)."""
    t = r.cfg.train
    return local_train(
        r.model,
        r.data.train_x,
        r.data.train_y,
        epochs=epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        generator=r.batches(phase),
        samples_per_epoch=len(r.data.train_y) + len(r.data.guard_y),
        loss=loss,
    )
