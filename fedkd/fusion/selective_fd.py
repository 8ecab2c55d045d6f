"""Selective-FD (Shao et al., Nature Communications 2024): share knowledge only where it is sound.

Client side: a selector withholds predictions on transfer rows that lie outside the client's own
data. The paper trains a density-ratio estimator per client; ours is a deterministic
nearest-neighbour novelty detector in input space: a transfer row is kept when its cosine
distance to the nearest private training sample is at most the ``selective-quantile`` quantile
of the private samples' own nearest-neighbour distances (leave-one-out). Cosine rather than
Euclidean distance: on MNIST label skew it separates a client's classes from the others better
(AUROC 0.61-0.86 against 0.55-0.73 over three clients; pixel norms mostly measure ink).
Uploads become sparse: a packed row mask plus the kept rows (fedkd/compression.py); the mask
itself derives from private data and is declared unprotected (fedkd/protocol.py).

Server side: the ensemble of row n is the mean of the predictions uploaded for it; rows nobody
uploaded, and rows whose ensemble is ambiguous (normalised entropy H / ln C above
``selective-entropy``), get no target. Every client gets the same target and distils only on the
rows that have one. Knowledge is plain (T = 1) probabilities, as in DS-FL: "ambiguous" is then
judged on the models' own confidence, not on rows softened at ``temperature`` (at T = 3 nearly
every row of an ensemble is above 0.9). See docs/design.md (fidelity table).
"""

from __future__ import annotations

import numpy as np
import torch

from fedkd.config import DataConfig, ExperimentConfig, FusionConfig
from fedkd.data.federation import ClientData
from fedkd.fusion.base import FUSIONS, FusionAlgorithm, FusionResult

_EPS = 1e-12
_CHUNK = 1024  # query rows per similarity block: bounds memory at _CHUNK x reference floats


def nearest_distances(
    queries: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False
) -> np.ndarray:
    """Cosine distance (1 - cosine similarity) of each query row to its nearest reference row:
    (Q, D), (R, D) -> (Q,). ``exclude_self``: queries are the reference itself (a row is not its
    own neighbour)."""
    q = torch.nn.functional.normalize(queries.double(), dim=1)  # (Q, D)
    r = torch.nn.functional.normalize(reference.double(), dim=1)  # (R, D)
    out = []
    for start in range(0, len(q), _CHUNK):
        similarity = q[start : start + _CHUNK] @ r.T  # (B, R)
        if exclude_self:
            rows = torch.arange(len(similarity))
            similarity[rows, rows + start] = -torch.inf
        out.append(1.0 - similarity.max(dim=1).values)
    return torch.cat(out).numpy() if out else np.zeros(0)


def novelty_mask(train_x: torch.Tensor, transfer_x: torch.Tensor, quantile: float) -> np.ndarray:
    """(N_k, ...) private inputs, (N_t, ...) transfer inputs -> (N_t,) bool, True: in-distribution
    (nearest private sample no farther than the ``quantile`` of the private leave-one-out ones)."""
    private = train_x.reshape(len(train_x), -1)  # (N_k, D)
    public = transfer_x.reshape(len(transfer_x), -1)  # (N_t, D)
    if len(private) < 2:
        return np.ones(len(public), dtype=bool)  # nothing to estimate a threshold from: keep all
    threshold = np.quantile(nearest_distances(private, private, exclude_self=True), quantile)
    return nearest_distances(public, private) <= threshold


_MASKS: dict[tuple[DataConfig, int, int, float], np.ndarray] = {}  # per process: the data never changes


def client_mask(data_cfg: DataConfig, seed: int, pid: int, quantile: float, data: ClientData) -> np.ndarray:
    """The selector depends only on the client's data: computed once per process and client."""
    key = (data_cfg, seed, pid, quantile)
    if key not in _MASKS:
        if len(_MASKS) >= 256:
            _MASKS.clear()
        mask = novelty_mask(data.train_x, data.transfer_x, quantile)
        mask.setflags(write=False)
        _MASKS[key] = mask
    return _MASKS[key]


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
    uploads = "predictions"
    sparse = True
    fixed_temperature = 1.0  # knowledge is plain probabilities, and "ambiguous" is judged on them
    paper = "Shao et al. 2024, Selective-FD (Nature Communications, arXiv 2304.01731)"
    settings = ("selective-quantile", "selective-entropy")

    def upload_mask(
        self, cfg: ExperimentConfig, pid: int, data: ClientData, rows: np.ndarray | None
    ) -> np.ndarray | None:
        mask = client_mask(cfg.data, cfg.run.seed, pid, cfg.fusion.selective_quantile, data)
        return mask if rows is None else mask[rows]

    def fuse(self, preds: np.ndarray, cfg: FusionConfig) -> FusionResult:
        target, weights = select_targets(preds, cfg.selective_entropy)
        kept = not np.isnan(target).all()
        return FusionResult(targets=[target if kept else None] * preds.shape[0], weights=weights)


FUSIONS.register("selective-fd")(SelectiveFD())
