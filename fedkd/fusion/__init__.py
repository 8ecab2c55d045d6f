"""Fusion algorithms, one module each, registered by name in FUSIONS."""

from fedkd.fusion import (  # noqa: F401  (registration side effects)
    dsfl,
    fd,
    fedavg,
    feddf,
    fedmd,
    fedproto,
    knfu,
    ktpfl,
    local,
    selective_fd,
    self_distill,
)
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult, knowledge_rows, transfer_row_count

__all__ = ["FUSIONS", "FusionAlgorithm", "FusionResult", "knowledge_rows", "transfer_row_count"]
