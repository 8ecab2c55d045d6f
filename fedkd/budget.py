"""One compute budget per round for every algorithm: what makes fedkd's comparisons fair.

Every client, whatever the algorithm, makes ``local-epochs + revisit-epochs`` passes over its
private partition per round, with the same optimiser (Adam, ``learning-rate``, a fresh one per
phase) and the same initial weights for the same client and seed. Under ``budget-match = steps``
(the default) every client also makes the same number of *optimiser steps* per round: the
reference is ``distill-epochs`` passes over the whole transfer set (``transfer_steps``); a client
that distils on fewer rows or not at all (local, fedavg, a client with no target, a selective
upload, FedMD's subset) spends the difference on private data in a ``makeup`` phase, where the
distillation would have been. Under ``passes`` distillation is extra compute, as most papers
run it. Algorithms differ only in what happens between the two private phases:

- predictions (fedmd, dsfl, knfu, knfu-guard): local -> upload -> distil on the transfer set
  (``distill-epochs``; skipped when the client gets no target) -> revisit;
- nothing (local): local -> revisit (the same two phases, no distillation in between);
- weights (fedavg, and feddf which also uploads predictions): the same two private phases
  (local, then revisit with a fresh optimiser), both before the upload; the averaged (feddf:
  averaged, then server-distilled) model is then adopted and evaluated as is (FedAvg and FedDF
  evaluate the global model; no fine-tuning after averaging).

A server that trains (feddf) spends ``server_distill_steps`` mini-batches per architecture and
round of its own; that budget is recorded apart and timed as ``server_compute_s`` per round.

Each client reports its optimiser steps on private data and on the transfer set every round
(``private_steps`` / ``transfer_steps`` in the round record), and the server its own
(``server_steps``). A distillation that knfu-guard rolls back still spent its steps. A client
that holds out a guard slice (knfu-guard) makes each private epoch as long as its whole
partition (``samples_per_epoch``), so it processes as many private samples as any other client.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fedkd.config import ExperimentConfig
from fedkd.fusion import FUSIONS


@dataclass(frozen=True)
class ComputeBudget:
    local_epochs: int  # private passes before the upload
    revisit_epochs: int  # private passes after the fusion step
    distill_epochs: int  # transfer-set passes per round when a target arrives
    temperature: float  # T of uploads, targets and the distillation loss
    pretrain_epochs: int = 0  # supervised epochs on the labelled transfer set, before round 1 only
    revisit_before_upload: bool = False  # weight averaging: both private phases before the upload
    server_distill_steps: int = 0  # server-side mini-batches per architecture and round (feddf)
    match: str = "steps"  # budget-match: steps (equal optimiser steps per round) or passes
    transfer_steps: int = 0  # steps of distill-epochs over the whole transfer set: the step reference

    def makeup_steps(self, distilled: int) -> int:
        """Private steps a client adds this round after ``distilled`` distillation steps, so that
        every client makes the same number of optimiser steps (0 under budget-match = passes)."""
        return max(self.transfer_steps - distilled, 0) if self.match == "steps" else 0

    @property
    def private_epochs(self) -> int:
        return self.local_epochs + self.revisit_epochs

    def describe(self) -> str:
        matched = (
            f"; equal steps: {self.transfer_steps} transfer-set steps, or as many private ones"
            if self.match == "steps"
            else "; equal private passes (distillation extra)"
        )
        return (
            f"budget/round: {self.private_epochs} private epochs ({self.local_epochs} local + "
            f"{self.revisit_epochs} revisit), {self.distill_epochs} distillation epochs "
            f"at T={self.temperature:g}"
            + matched
            + (
                f"; {self.pretrain_epochs} public pretraining epochs before round 1"
                if self.pretrain_epochs
                else ""
            )
            + (
                f"; server: {self.server_distill_steps} distillation steps per architecture"
                if self.server_distill_steps
                else ""
            )
        )

    def as_record(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "private_epochs": self.private_epochs}


def compute_budget(cfg: ExperimentConfig) -> ComputeBudget:
    algorithm = FUSIONS.get(cfg.fusion.algorithm)
    t = cfg.train
    temperature = algorithm.knowledge_temperature(t)
    # the step reference: distill-epochs over the whole transfer set, whatever the algorithm does
    reference = t.distill_epochs * math.ceil(cfg.data.transfer_size / t.batch_size)
    if algorithm.uploads_weights:
        return ComputeBudget(
            t.local_epochs,
            t.revisit_epochs,
            0,
            temperature,
            algorithm.pretrain_epochs(cfg),
            True,
            algorithm.server_steps(cfg),
            t.budget_match,
            reference,
        )
    distill_epochs = t.distill_epochs if algorithm.uploads_predictions else 0
    return ComputeBudget(
        t.local_epochs,
        t.revisit_epochs,
        distill_epochs,
        temperature,
        algorithm.pretrain_epochs(cfg),
        match=t.budget_match,
        transfer_steps=reference,
    )
