"""The hooks every exchange offers the round loop, and how a target travels down."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from fedkd.config import ExperimentConfig
from fedkd.data.sources import dataset_spec
from fedkd.protocol import sparse_arrays
from fedkd.run_plan import run_plan


def target_record(target: np.ndarray) -> ArrayRecord:
    """A personalised target goes down as float32: (M, C) rows that have a target, plus the
    packed row mask when some rows (all-NaN in ``target``, (N_t, C)) have none."""
    return ArrayRecord({name: Array(arr) for name, arr in sparse_arrays(target).items()})


class Exchange:
    """Hooks the round loop calls on every exchange; only weight averaging keeps server state."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.fusion = run_plan(cfg).algorithm
        self.server_steps = 0  # the server's own optimiser steps in the last combine (FedDF)

    def local_content(self, pid: int) -> dict[str, Any]:
        """Extra content of client ``pid``'s ``train.local`` message."""
        return {}

    def distill_content(self, pid: int) -> dict[str, Any]:
        """Content of client ``pid``'s ``train.distill`` message in a round whose fusion made it
        none (too few replies, or refused): nothing, except where the client's private steps
        depend on knowledge the server holds (the data-free family)."""
        return {}

    def confirm(self, completed: list[int]) -> None:
        """The clients whose distil reply came back this round."""

    def save(self, folder: str, server_round: int) -> None:
        """Server-side state a resumed run needs, after ``server_round``, into ``folder``."""

    def load(self, folder: str, recorded: int) -> None:
        """Restore what ``save`` wrote after the last recorded round."""


def most_private_samples(cfg: ExperimentConfig) -> float:
    """The most private training samples one client can hold: what any claim of a size is capped at."""
    whole, cap = dataset_spec(cfg.data).train_size, cfg.data.max_client_samples
    return float(min(cap, whole) if cap > 0 else whole)
