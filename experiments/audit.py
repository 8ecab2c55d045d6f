"""Empirical privacy audits of what clients release: the two leaks that exist in fedkd.

Both audits train every client for ``rounds`` rounds of local training only (with ``rounds`` = 1:
exactly the source of its first upload; later uploads come from distilled models, which the audit
does not reproduce) and release predictions exactly as an upload is made (upload temperature,
clip, Gaussian noise of each audited multiplier, projection). Every figure comes with a bootstrap
95% interval (clients resampled, since one client's samples share a model) and a baseline, so a
number is never read without knowing what chance looks like.

1. **Membership inference.** Members: a client's private training samples; non-members: its own
   held-out split (same label distribution, so label skew cannot pass for leakage). Attacks: the
   released probability of the true label (confidence), and whether the released top label is
   right (the standard label-only attack). No-model reference: the client's training frequency
   of the sample's class. fedkd's transfer set holds no private samples, so no upload contains a
   member: this audit gives the attacker more than the protocol does (the client's predictor,
   queried on private points); it is not a measurement of the transfer-set release itself.
2. **Label-distribution inference.** The mean of a client's release on the transfer set (its
   EPD, which KnFu's server computes by design) taken as an estimate of its label histogram;
   error = total variation to the true training histogram. Blind guesses: uniform, and the
   population's label prior. A data-free algorithm's per-class upload gives more: its rows say
   which classes the client holds (estimate: uniform over them; noise does not hide them) and
   FedProto's counts give the histogram exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import stats

from fedkd.client_steps import local_step, training_data
from fedkd.config import ExperimentConfig
from fedkd.data.federation import ClientData
from fedkd.models import architecture_for, build_model
from fedkd.privacy import privatize
from fedkd.run_plan import run_plan
from fedkd.seeding import numpy_rng
from fedkd.training import predict_proba

RESAMPLES = 1000


@dataclass
class AuditedClient:
    """One client's released predictor and what the audits compare against."""

    pid: int
    model: torch.nn.Module
    data: ClientData
    histogram: np.ndarray  # (C,) the client's true training label frequencies


def trained_clients(cfg: ExperimentConfig) -> list[AuditedClient]:
    """Every client after ``rounds`` rounds of local training only (the first uploads' source)."""
    out = []
    for pid in range(cfg.data.num_clients):
        state = None
        for server_round in range(1, cfg.run.rounds + 1):
            state = local_step(cfg, pid, server_round, state, predict=False).state
        data = training_data(cfg, pid)  # with the guard slice held out, as in training
        arch = architecture_for(cfg.model.models, pid, cfg.data.num_clients)
        model = build_model(
            arch, data.input_shape, data.num_classes, cfg.run.seed, cfg.model.projection_width
        )
        model.load_state_dict(state)
        counts = np.bincount(data.train_y.numpy(), minlength=data.num_classes).astype(np.float64)
        out.append(AuditedClient(pid, model, data, counts / counts.sum()))
    return out


def released(cfg: ExperimentConfig, clean: np.ndarray, multiplier: float, *tag: int | str) -> np.ndarray:
    """(N, C) predictions as a client would upload them with Gaussian noise of ``multiplier``."""
    if multiplier == 0.0:
        return clean
    privacy = replace(
        cfg.privacy, mechanism="gaussian", noise_multiplier=multiplier, calibrate_from="noise-multiplier"
    )
    rng = numpy_rng(cfg.run.seed, "audit-noise", f"{multiplier:g}", *tag)
    return privatize(clean, privacy, run_plan(cfg).temperature, rng)


def _auc(members: np.ndarray, outsiders: np.ndarray) -> float:
    """P(member score > non-member score) + half the ties: the ROC AUC (Mann-Whitney U / n1 n0)."""
    u = stats.mannwhitneyu(members, outsiders, alternative="two-sided").statistic
    return float(u / (len(members) * len(outsiders)))


def auc_with_ci(groups: list[tuple[np.ndarray, np.ndarray]], seed: int) -> dict[str, float | list[float]]:
    """AUC of (member scores, non-member scores) pooled over clients, with a 95% percentile
    bootstrap interval that resamples whole clients (their samples share one model)."""

    def pooled(clients: np.ndarray) -> float:
        members = np.concatenate([groups[int(k)][0] for k in clients])
        outsiders = np.concatenate([groups[int(k)][1] for k in clients])
        return _auc(members, outsiders)

    boot = stats.bootstrap(
        (np.arange(len(groups)),),
        pooled,
        n_resamples=RESAMPLES,
        vectorized=False,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = boot.confidence_interval
    return {"auc": pooled(np.arange(len(groups))), "ci": [float(interval.low), float(interval.high)]}


def mean_with_ci(values: np.ndarray, seed: int) -> dict[str, float | list[float]]:
    """Mean and its 95% percentile bootstrap interval (over clients)."""
    boot = stats.bootstrap(
        (values,), np.mean, n_resamples=RESAMPLES, method="percentile", rng=np.random.default_rng(seed)
    )
    interval = boot.confidence_interval
    return {"mean": float(np.mean(values)), "ci": [float(interval.low), float(interval.high)]}


def membership_rows(
    cfg: ExperimentConfig, clients: list[AuditedClient], multipliers: list[float]
) -> list[dict]:
    """Confidence and label-only attacks and the no-model reference, per noise multiplier."""
    temperature = run_plan(cfg).temperature
    clean = []
    for c in clients:
        x = torch.cat([c.data.train_x, c.data.test_x])  # members first, then the held-out split
        y = np.concatenate([c.data.train_y.numpy(), c.data.test_y.numpy()])
        member = np.r_[np.ones(len(c.data.train_y), bool), np.zeros(len(c.data.test_y), bool)]
        clean.append((c, predict_proba(c.model, x, temperature), y, member))  # (N_k + M_k, C)

    def split(scores: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(s[m], s[~m]) for s, (*_, m) in zip(scores, clean, strict=True)]

    reference = auc_with_ci(split([c.histogram[y] for c, _, y, _ in clean]), cfg.run.seed)
    rows = []
    for multiplier in [0.0, *multipliers]:
        confidence, correct = [], []
        for c, probs, y, _ in clean:
            release = released(cfg, probs, multiplier, "membership", c.pid)
            confidence.append(release[np.arange(len(y)), y])
            correct.append((release.argmax(axis=1) == y).astype(np.float64))
        attack = auc_with_ci(split(confidence), cfg.run.seed)
        label_only = auc_with_ci(split(correct), cfg.run.seed)
        is_member = np.concatenate([m for *_, m in clean])
        rows.append(
            {
                "noise_multiplier": multiplier,
                "auc": attack["auc"],
                "auc_ci": attack["ci"],
                "label_only_auc": label_only["auc"],
                "label_only_ci": label_only["ci"],
                "class_frequency_auc": reference["auc"],
                "class_frequency_ci": reference["ci"],
                "members": int(is_member.sum()),
                "non_members": int((~is_member).sum()),
                "release_accuracy": float(np.concatenate(correct).mean()),
            }
        )
    return rows


def label_distribution_rows(
    cfg: ExperimentConfig, clients: list[AuditedClient], multipliers: list[float]
) -> list[dict]:
    """Total-variation error of the EPD as a label-histogram estimate, against blind guesses."""
    temperature = run_plan(cfg).temperature
    truth = np.stack([c.histogram for c in clients])  # (K, C)
    sizes = np.array([len(c.data.train_y) for c in clients], dtype=np.float64)
    prior = (truth * sizes[:, None]).sum(axis=0) / sizes.sum()  # (C,) the population's labels
    uniform = np.full(truth.shape[1], 1.0 / truth.shape[1])

    def tv(estimates: np.ndarray) -> np.ndarray:  # (K, C) -> (K,)
        return 0.5 * np.abs(estimates - truth).sum(axis=1)

    blind_uniform = mean_with_ci(tv(np.broadcast_to(uniform, truth.shape)), cfg.run.seed)
    blind_prior = mean_with_ci(tv(np.broadcast_to(prior, truth.shape)), cfg.run.seed)
    algorithm = run_plan(cfg).algorithm
    clean = [predict_proba(c.model, c.data.transfer_x, temperature) for c in clients]  # K x (N_t, C)
    rows = []
    for multiplier in [0.0, *multipliers]:
        if algorithm.uploads_class_knowledge:
            epds = np.stack([class_upload_estimate(cfg, c) for c in clients])  # (K, C): noise-blind
        else:
            epds = np.stack(
                [
                    released(cfg, probs, multiplier, "label-distribution", c.pid).mean(axis=0)
                    for c, probs in zip(clients, clean, strict=True)
                ]
            )  # (K, C)
        attack = mean_with_ci(tv(epds), cfg.run.seed)
        rows.append(
            {
                "noise_multiplier": multiplier,
                "tv": attack["mean"],
                "tv_ci": attack["ci"],
                "tv_uniform": blind_uniform["mean"],
                "tv_uniform_ci": blind_uniform["ci"],
                "tv_prior": blind_prior["mean"],
                "tv_prior_ci": blind_prior["ci"],
                "clients": len(clients),
            }
        )
    return rows


def class_upload_estimate(cfg: ExperimentConfig, client: AuditedClient) -> np.ndarray:
    """(C,) the label histogram a per-class upload reveals: its counts when it sends them, else
    uniform over the classes it has rows for (the row mask is never noised)."""
    means, counts = run_plan(cfg).algorithm.class_knowledge(cfg, client.model, client.data)
    if counts is not None:
        return counts / counts.sum()
    held = ~np.isnan(means).all(axis=1)  # (C,)
    return held / held.sum()


def run_audit(cfg: ExperimentConfig, multipliers: list[float]) -> dict[str, list[dict]]:
    """Both audits on one set of trained clients, without noise and at each multiplier."""
    clients = trained_clients(cfg)
    return {
        "membership": membership_rows(cfg, clients, multipliers),
        "label_distribution": label_distribution_rows(cfg, clients, multipliers),
    }
