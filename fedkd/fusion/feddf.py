"""FedDF (Lin et al., NeurIPS 2020): ensemble distillation for robust model fusion, on the server.

Clients upload their weights and their soft predictions on the unlabelled transfer set. The
server averages the weights per architecture (FedAvg within each architecture, weighted by
num-examples: FedDF's initialisation of each prototype's fusion), then distils every
architecture's averaged model towards the ensemble of *all* clients for ``feddf-server-steps``
mini-batches (Adam, ``learning-rate``, ``batch-size``, KL at ``temperature``, T^2-scaled). The
ensemble is FedDF's averaged logits: from p_k = softmax(z_k / T), softmax(mean_k log p_k) =
softmax(mean_k z_k / T) (fedmd.class_score_consensus). Clients adopt their architecture's fused
model. The server's steps are its own budget, timed as ``server_compute_s`` per round; the
clients' private budget is FedAvg's (both private phases before the upload). Clients computing
the ensemble's predictions, rather than the server running every received model on the transfer
set, gives the same teacher (no augmentation) at a fraction of the server's compute. See
docs/design.md (fidelity table).
"""

from __future__ import annotations

import numpy as np
import torch

from fedkd.config import ExperimentConfig
from fedkd.data.federation import transfer_inputs
from fedkd.data.sources import dataset_spec
from fedkd.fusion.base import FUSIONS, FusionAlgorithm
from fedkd.fusion.fedmd import class_score_consensus
from fedkd.fusion_cards import CARDS
from fedkd.models import build_model
from fedkd.seeding import torch_generator
from fedkd.training import distill_steps, pinned_compute, resolve_device

StateDict = dict[str, torch.Tensor]


def distil_architecture(
    arch: str,
    state: StateDict,
    x: torch.Tensor,
    teacher: np.ndarray,
    cfg: ExperimentConfig,
    server_round: int,
    temperature: float,
) -> StateDict:
    """One architecture's averaged model, distilled towards the (N, C) teacher on x (N, C, H, W)
    at ``temperature``, the algorithm's (the clients' soft predictions are at it too)."""
    spec = dataset_spec(cfg.data)
    model = build_model(arch, spec.input_shape, spec.num_classes, cfg.run.seed, cfg.model.projection_width)
    model.load_state_dict(state)
    model.to(resolve_device(cfg.train.device))
    distill_steps(
        model,
        x,
        torch.from_numpy(np.asarray(teacher, dtype=np.float32)),
        temperature=temperature,
        steps=cfg.fusion.feddf_server_steps,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.learning_rate,
        generator=torch_generator(cfg.run.seed, "feddf", arch, server_round),
    )
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class FedDF(FusionAlgorithm):
    card = CARDS["feddf"]

    def server_steps(self, cfg: ExperimentConfig) -> int:
        return cfg.fusion.feddf_server_steps

    def server_distill(
        self, models: dict[str, StateDict], preds: np.ndarray, cfg: ExperimentConfig, server_round: int
    ) -> dict[str, StateDict] | None:
        if cfg.fusion.feddf_server_steps == 0:
            return None
        teacher = class_score_consensus(preds)  # (N, C): the averaged logits of every client, at T
        x = transfer_inputs(cfg.data, cfg.run.seed)  # (N, C, H, W)
        temperature = self.knowledge_temperature(cfg.train)
        with pinned_compute(cfg.train.client_threads, cfg.train.mixed_precision):
            return {
                arch: distil_architecture(arch, state, x, teacher, cfg, server_round, temperature)
                for arch, state in sorted(models.items())
            }


FUSIONS.register("feddf")(FedDF())
