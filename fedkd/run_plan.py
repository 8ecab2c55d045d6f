"""What a run's config resolves to, once per config: its fusion algorithm and its compute budget
(epochs, steps, the temperature of every soft prediction and distillation, server steps). Every
reader asks the plan rather than looking the algorithm up again or recomputing the budget, so a
derived fact (FedDF's server distillation temperature, say) has one source."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fedkd.budget import ComputeBudget, compute_budget
from fedkd.config import ExperimentConfig
from fedkd.fusion import FUSIONS
from fedkd.fusion.base import FusionAlgorithm


@dataclass(frozen=True)
class RunPlan:
    algorithm: FusionAlgorithm
    budget: ComputeBudget

    @property
    def temperature(self) -> float:
        """Of the clients' soft predictions, their noise, and every distillation (the algorithm's)."""
        return self.budget.temperature


@lru_cache(maxsize=64)  # configs are frozen: a client asks for its run's plan every phase
def run_plan(cfg: ExperimentConfig) -> RunPlan:
    return RunPlan(FUSIONS.get(cfg.fusion.algorithm), compute_budget(cfg))
