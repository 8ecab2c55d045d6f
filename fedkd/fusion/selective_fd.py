"""Selective-FD (Shao et al., Nature Communications 2024): share knowledge only where it is sound.

Client side: a selector withholds predictions on transfer rows that lie outside the client's own
data. As in the reference code (github.com/shaojiawei07/Selective-FD), each client estimates a
density ratio with KuLSIF (fedkd/density_ratio.py) on flattened normalised inputs and thresholds
it at a quantile of its own held-out private samples' ratios (the reference: the first quartile,
so 75% of in-distribution samples pass). Ours, per client: r = p_private / p_transfer, numerator
its private training inputs, denominator the transfer inputs (the reference draws uniform samples
from the input box; in 784 dimensions they sit far from every image, so its estimate reduces to a
kernel density of the private data); Gaussian kernel width ``selective-kernel-width`` times the
median private-to-transfer distance (the reference's fixed 5 fits its own MNIST scaling only);
lam = n^-1/2; threshold the (1 - ``selective-quantile``) quantile of the private samples'
leave-one-out ratios (exact refits: 100 samples leave none to spare for a held-out split).
No training, no randomness: the same data gives the same mask. ``selector_scores`` measures the
mask against the transfer labels (precision and recall of held classes; audit only).
Uploads become sparse: a packed row mask plus the kept rows (fedkd/compression.py); the mask
itself derives from private data and is declared unprotected (fedkd/protocol.py).

Server side: the ensemble of row n is the mean of the predictions uploaded for it; rows nobody
uploaded, and rows whose ensemble is ambiguous (normalised entropy H / ln C above
``selective-entropy``), get no target. Every client gets the same target and distils only on the
rows that have one (its ``transfer_samples`` per round count them: a round that filtered most rows
away shows as few samples distilled). Knowledge is plain (T = 1) probabilities, as in DS-FL:
"ambiguous" is then judged on the models' own confidence, not on rows softened at ``temperature``
(at T = 3 nearly every row of an ensemble is above 0.9). See docs/design.md (fidelity table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.distance import cdist

from fedkd.config import DataConfig, ExperimentConfig, FusionConfig
from fedkd.data.federation import ClientData, client_data
from fedkd.density_ratio import KuLSIF
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult
from fedkd.fusion_cards import CARDS

_EPS = 1e-12


def density_ratio_mask(
    train_x: torch.Tensor, transfer_x: torch.Tensor, keep: float, width_factor: float
) -> np.ndarray:
    """(N_k, ...) private inputs, (N_t, ...) transfer inputs -> (N_t,) bool, True: in-distribution
    (KuLSIF ratio p_private / p_transfer at least the (1 - ``keep``) quantile of the private
    samples' leave-one-out ratios)."""
    private = train_x.reshape(len(train_x), -1).double().numpy()  # (N_k, D)
    public = transfer_x.reshape(len(transfer_x), -1).double().numpy()  # (N_t, D)
    if len(private) < 2:
        return np.ones(len(public), dtype=bool)  # nothing to estimate a threshold from: keep all
    median = float(np.median(cdist(private, public)))
    estimator = KuLSIF.fit(private, public, width_factor * (median if median > 0 else 1.0))
    threshold = np.quantile(estimator.leave_one_out(), 1.0 - keep)
    return estimator.ratio(public) >= threshold


_MASKS: dict[tuple[DataConfig, int, int, float, float], np.ndarray] = {}  # per process: data never changes


def client_mask(cfg: ExperimentConfig, pid: int, data: ClientData) -> np.ndarray:
    """The selector depends only on the client's data: computed once per process and client."""
    f = cfg.fusion
    key = (cfg.data, cfg.run.seed, pid, f.selective_quantile, f.selective_kernel_width)
    if key not in _MASKS:
        if len(_MASKS) >= 256:
            _MASKS.clear()
        mask = density_ratio_mask(
            data.train_x, data.transfer_x, f.selective_quantile, f.selective_kernel_width
        )
        mask.setflags(write=False)
        _MASKS[key] = mask
    return _MASKS[key]


@dataclass(frozen=True)
class SelectorScore:
    """One client's selector against the transfer labels (which the selector never sees)."""

    uploaded: float  # share of transfer rows uploaded
    precision: float  # share of uploaded rows whose label is a class the client holds (NaN: none uploaded)
    recall: float  # share of held-class transfer rows uploaded (NaN: the transfer set has none)


def selector_scores(cfg: ExperimentConfig) -> dict[int, SelectorScore]:
    """Per partition id: how well the client-side selector keeps rows of the classes the client
    trains on ("held") and withholds the others."""
    scores = {}
    for pid in range(cfg.data.num_clients):
        data = client_data(cfg.data, cfg.run.seed, pid, 0.0)
        mask = client_mask(cfg, pid, data)  # (N_t,)
        held = np.isin(data.transfer_y.numpy(), data.train_y.numpy())  # (N_t,)
        hits = int((mask & held).sum())
        scores[pid] = SelectorScore(
            uploaded=float(mask.mean()),
            precision=float(hits / mask.sum()) if mask.any() else float("nan"),
            recall=float(hits / held.sum()) if held.any() else float("nan"),
        )
    return scores


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """(N, C) rows on the simplex -> (N,) entropy / ln C, in [0, 1]."""
    p = np.clip(probs, _EPS, None)
    return -(probs * np.log(p)).sum(axis=1) / np.log(probs.shape[1])


def select_targets(preds: np.ndarray, max_entropy: float) -> tuple[np.ndarray, np.ndarray]:
    """Server selector. preds: (K, N, C) with NaN rows where a client withheld its prediction.
    Returns the (N, C) ensemble target (NaN rows: no target) and the (K, K) weights: row k (every
    row alike) = each client's share of the kept targets (1 / n_i per kept row it uploaded)."""
    k, n, _ = preds.shape
    present = ~np.isnan(preds).any(axis=2)  # (K, N)
    count = present.sum(axis=0)  # (N,) clients that uploaded row n
    summed = np.where(present[:, :, None], preds, 0.0).sum(axis=0)  # (N, C)
    ensemble = summed / np.maximum(count, 1)[:, None]  # (N, C)
    keep = count > 0
    keep[keep] = normalised_entropy(ensemble[keep]) <= max_entropy
    target = np.where(keep[:, None], ensemble, np.nan)  # (N, C)
    share = (present[:, keep] / count[keep]).sum(axis=1)  # (K,) contributions to the kept rows
    weights = np.tile(share / max(int(keep.sum()), 1), (k, 1)) if keep.any() else np.zeros((k, k))
    return target, weights


class SelectiveFD(FusionAlgorithm):
    card = CARDS["selective-fd"]
    fixed_temperature = 1.0  # knowledge is plain probabilities, and "ambiguous" is judged on them

    def upload_mask(
        self, cfg: ExperimentConfig, pid: int, data: ClientData, rows: np.ndarray | None
    ) -> np.ndarray | None:
        mask = client_mask(cfg, pid, data)
        return mask if rows is None else mask[rows]

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        target, weights = select_targets(preds, cfg.selective_entropy)
        kept = not np.isnan(target).all()
        return FusionResult(targets=[target if kept else None] * preds.shape[0], weights=weights)


FUSIONS.register("selective-fd")(SelectiveFD())
