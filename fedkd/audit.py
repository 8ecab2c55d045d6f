"""Empirical privacy audit: membership inference against released soft targets.

Threat model: the transfer set holds some of a client's own private training samples
(members) and as many samples the client never saw (non-members); the attacker sees the
client's released soft predictions on them and knows their labels. Score = released
probability of the true label (a confidence attack): members score higher on an overfit model.
AUC 0.5 = the release tells nothing about membership; 1.0 = it reveals every member.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fedkd.budget import compute_budget
from fedkd.client_steps import local_step
from fedkd.config import ExperimentConfig
from fedkd.data.federation import client_data
from fedkd.models import architecture_for, build_model
from fedkd.privacy import privatize
from fedkd.seeding import numpy_rng
from fedkd.training import predict_proba


def _trained_model(cfg: ExperimentConfig, pid: int) -> tuple[torch.nn.Module, object]:
    state = None
    for server_round in range(1, cfg.run.rounds + 1):  # local training only: the release's source
        state = local_step(cfg, pid, server_round, state, predict=False).state
    data = client_data(cfg.data, cfg.run.seed, pid)
    model = build_model(
        architecture_for(cfg.model.models, pid, cfg.data.num_clients),
        data.input_shape,
        data.num_classes,
        cfg.run.seed,
    )
    model.load_state_dict(state)
    return model, data


def membership_auc(cfg: ExperimentConfig, multipliers: list[float], pid: int = 0) -> list[dict[str, float]]:
    """AUC of the confidence attack without noise and for each noise multiplier (gaussian,
    clip and sensitivity model from ``cfg.privacy``)."""
    model, data = _trained_model(cfg, pid)
    n = min(len(data.train_y), len(data.global_y))
    pick = numpy_rng(cfg.run.seed, "audit", pid)
    members = pick.choice(len(data.train_y), n, replace=False)
    outsiders = pick.choice(len(data.global_y), n, replace=False)
    x = torch.cat([data.train_x[members], data.global_x[outsiders]])  # (2n, C, H, W)
    y = np.concatenate([data.train_y[members].numpy(), data.global_y[outsiders].numpy()])
    is_member = np.r_[np.ones(n), np.zeros(n)]
    clean = predict_proba(model, x, compute_budget(cfg).temperature)  # (2n, C), at the upload T
    rows = []
    for multiplier in [0.0, *multipliers]:
        if multiplier == 0.0:
            released = clean
        else:
            privacy = replace(
                cfg.privacy,
                mechanism="gaussian",
                noise_multiplier=multiplier,
                calibrate_from="noise-multiplier",
            )
            released = privatize(
                clean,
                privacy,
                compute_budget(cfg).temperature,
                numpy_rng(cfg.run.seed, "audit-noise", f"{multiplier:g}"),
            )
        score = released[np.arange(len(y)), y]
        rows.append(
            {
                "noise_multiplier": multiplier,
                "auc": float(roc_auc_score(is_member, score)),
                "members": int(n),
                "release_accuracy": float((released.argmax(axis=1) == y).mean()),
            }
        )
    return rows
