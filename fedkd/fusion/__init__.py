"""Fusion algorithms, one module each, registered by name in FUSIONS."""

from fedkd.fusion import dsfl, fedavg, fedmd, knfu, local  # noqa: F401  (registration side effects)
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult

__all__ = ["FUSIONS", "FusionAlgorithm", "FusionResult"]
