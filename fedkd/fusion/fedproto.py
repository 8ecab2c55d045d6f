"""FedProto (Tan et al., AAAI 2022, arXiv 2105.00243): federated prototype learning.

Each client uploads, per class it holds, its prototype: the mean representation (the
classifier's input, (D,)) of its private samples of that class, with its sample count. The
server averages each class's prototypes weighted by the counts (the paper's eq. 7; its reference
code averages unweighted) into global prototypes, the same for every client. A client adds
``fedproto-weight`` x the mean squared distance between each sample's representation and its
label's global prototype to the cross-entropy of every private step (the reference code's MSE
over the batch; a sample whose label has no global prototype adds 0). Inference is the
classifier's, as for every method in fedkd (the paper also reports nearest-prototype inference).

Models of different architectures need one representation width: fedkd provides it with
``projection-width`` (a linear layer of that width between each model's body and its
classifier; fedkd/models.py), which any algorithm can use, so that local with the same
projection is FedProto's like-for-like reference. Prototypes are unbounded real vectors: the
privacy mechanism (which noises rows on the simplex) does not apply. See docs/design.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedkd.config import ExperimentConfig
from fedkd.fusion.base import FUSIONS, FusionResult
from fedkd.fusion.class_knowledge import ClassKnowledgeAlgorithm, class_shares
from fedkd.fusion_cards import CARDS
from fedkd.models import architecture_for, representation_width, split_classifier
from fedkd.protocol import ProtocolError
from fedkd.training import ModelLoss, representations

PROTOTYPE_BOUND = 1e6  # largest prototype entry accepted: sums over any federation stay finite


def fedproto_loss(
    model: torch.nn.Module, prototypes: torch.Tensor, held: torch.Tensor, weight: float
) -> ModelLoss:
    """Cross-entropy + weight * mean over (B, D) of (h - prototype[y])^2 on samples whose label has
    a prototype (``held``: (C,) bool; prototypes: (C, D), zero rows where none; both on the
    model's device)."""
    body, classifier = split_classifier(model)

    def loss(_: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        h = body(xb)  # (B, D): the representation
        logits = classifier(h).float()  # (B, C)
        mask = held[yb].unsqueeze(1)  # (B, 1)
        gap = (h.float() - prototypes[yb]) * mask  # (B, D)
        return F.cross_entropy(logits, yb) + weight * gap.pow(2).mean()

    return loss


def shared_width(cfg: ExperimentConfig) -> set[int]:
    """The representation widths of the federation's architectures (one, or FedProto cannot run)."""
    names = {
        architecture_for(cfg.model.models, pid, cfg.data.num_clients) for pid in range(cfg.data.num_clients)
    }
    return {representation_width(name, cfg.data, cfg.model.projection_width) for name in names}


class FedProto(ClassKnowledgeAlgorithm):
    card = CARDS["fedproto"]

    def knowledge_width(self, cfg: ExperimentConfig) -> int:
        return max(shared_width(cfg))  # validation refuses a federation with several widths

    def statistic(self, cfg: ExperimentConfig, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        return representations(model, x)  # (N, D)

    def sends_counts(self) -> bool:
        return True

    def check_values(self, values: np.ndarray) -> None:
        if not np.isfinite(values).all() or (np.abs(values) > PROTOTYPE_BOUND).any():
            raise ProtocolError(f"prototypes must be finite with entries within +-{PROTOTYPE_BOUND:g}")

    def fuse_classes(
        self, knowledge: np.ndarray, counts: np.ndarray | None, cfg: ExperimentConfig
    ) -> FusionResult:
        if counts is None:
            raise ProtocolError("FedProto's uploads carry class counts")
        present = ~np.isnan(knowledge).all(axis=2)  # (K, C)
        mass = np.where(present, counts, 0.0)  # (K, C): each client's weight in each class's mean
        total = mass.sum(axis=0)  # (C,)
        with np.errstate(invalid="ignore", divide="ignore"):
            prototypes = np.einsum("kc,kcd->cd", mass, np.nan_to_num(knowledge)) / total[:, None]  # (C, D)
        prototypes[total == 0] = np.nan
        k = knowledge.shape[0]
        shares = class_shares(present, mass)  # (K,)
        return FusionResult(targets=[prototypes] * k, weights=np.tile(shares, (k, 1)))

    def private_loss(self, cfg: ExperimentConfig, model: torch.nn.Module, knowledge: np.ndarray) -> ModelLoss:
        device = next(model.parameters()).device
        held = torch.from_numpy(~np.isnan(knowledge).all(axis=1)).to(device)  # (C,)
        prototypes = torch.from_numpy(np.nan_to_num(knowledge).astype(np.float32)).to(device)  # (C, D)
        return fedproto_loss(model, prototypes, held, cfg.fusion.fedproto_weight)


FUSIONS.register("fedproto")(FedProto())
