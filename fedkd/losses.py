"""Knowledge-distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(target || softmax(student / T)) * T^2 (Hinton et al.): gradients keep their scale as T varies.

    student_logits: (B, C); target_probs: (B, C) rows on the simplex, made at the same T.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    return F.kl_div(log_student, target_probs, reduction="batchmean") * temperature**2
