"""FD (Jeong et al. 2018, arXiv 1811.11479): federated distillation without a transfer set.

Each client uploads, per label it holds, the mean of its soft predictions (the paper's
"local-average logit vector": softmax outputs) over its private samples of that label. The
server averages them per label; each client's teacher for label c is the mean over the *other*
clients that hold c (the paper's global average with the client's own vector taken out). A
client adds ``fd-weight`` x KL(teacher[y] || softmax(z / T)) T^2 to the cross-entropy of every
private step (the paper's distillation regulariser; the KL at temperature T of every
distillation in fedkd, where the paper uses plain T = 1 outputs: T is tuned, 1 included). Rows
travel as C x C probabilities, so the privacy mechanism noises them like transfer-set
predictions (C rows per release). See docs/design.md (fidelity table).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedkd.config import ExperimentConfig
from fedkd.data.sources import dataset_spec
from fedkd.fusion.base import FUSIONS, FusionResult
from fedkd.fusion.class_knowledge import ClassKnowledgeAlgorithm, class_shares
from fedkd.fusion_cards import CARDS
from fedkd.knowledge import simplex_violation
from fedkd.protocol import SIMPLEX_TOLERANCE, ProtocolError
from fedkd.training import ModelLoss, predict_proba


def fd_loss(teacher: torch.Tensor, weight: float, temperature: float) -> ModelLoss:
    """Cross-entropy + weight * T^2 KL(teacher[y] || softmax(z / T)), the KL averaged over the
    batch (a sample whose label has no teacher adds 0). teacher: (C, C) on the model's device,
    zero rows where none."""

    def loss(model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = model(xb).float()  # (B, C)
        target = teacher[yb]  # (B, C): zero rows where the label has no teacher
        log_student = F.log_softmax(logits / temperature, dim=1)
        kl = (torch.special.xlogy(target, target) - target * log_student).sum(dim=1)  # (B,)
        return F.cross_entropy(logits, yb) + weight * temperature**2 * kl.mean()

    return loss


class FD(ClassKnowledgeAlgorithm):
    card = CARDS["fd"]

    def knowledge_width(self, cfg: ExperimentConfig) -> int:
        return dataset_spec(cfg.data).num_classes

    def statistic(self, cfg: ExperimentConfig, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        return predict_proba(model, x, self.knowledge_temperature(cfg.train))  # (N, C) at the upload T

    def check_values(self, values: np.ndarray) -> None:
        if not np.isfinite(values).all():
            raise ProtocolError("per-class predictions contain inf")
        violation = simplex_violation(values)
        if violation > SIMPLEX_TOLERANCE:
            raise ProtocolError(f"per-class prediction rows are off the simplex by {violation:.3g}")

    def fuse_classes(
        self, knowledge: np.ndarray, counts: np.ndarray | None, cfg: ExperimentConfig
    ) -> FusionResult:
        present = ~np.isnan(knowledge).all(axis=2)  # (K, C)
        # (K, C, C); entries within the simplex tolerance below 0 count as 0 (a teacher's log)
        values = np.clip(np.nan_to_num(knowledge), 0.0, None)
        total, holders = values.sum(axis=0), present.sum(axis=0)  # (C, C), (C,)
        k = knowledge.shape[0]
        targets, weights = [], np.zeros((k, k))
        for i in range(k):
            others = holders - present[i]  # (C,): the other clients that hold each class
            useful = present[i] & (others > 0)  # the client's own classes that have a teacher
            target = np.full(values.shape[1:], np.nan)
            target[useful] = (total[useful] - values[i, useful]) / others[useful, None]
            targets.append(target)
            mass = present[:, useful].astype(float)  # (K, C'): who is in each teacher
            mass[i] = 0.0
            weights[i] = class_shares(present[:, useful], mass)
        return FusionResult(targets=targets, weights=weights)

    def private_loss(self, cfg: ExperimentConfig, model: torch.nn.Module, knowledge: np.ndarray) -> ModelLoss:
        device = next(model.parameters()).device
        teacher = torch.from_numpy(np.nan_to_num(knowledge).astype(np.float32)).to(device)  # (C, C)
        return fd_loss(teacher, cfg.fusion.fd_weight, self.knowledge_temperature(cfg.train))


FUSIONS.register("fd")(FD())
