"""Text report of a federated split: sizes and class histograms per client."""

from __future__ import annotations

import numpy as np

from fedkd.data.partition import FederatedSplit


def partition_table(hist: np.ndarray, split: FederatedSplit) -> list[str]:
    """hist: (K, C) private-train class counts. One line per client plus a header and totals."""
    k, c = hist.shape
    lines = [f"{'client':>6} {'train':>6} {'test':>5} {'cls':>3} | " + " ".join(f"{j:>5}" for j in range(c))]
    for pid in range(k):
        lines.append(
            f"{pid:>6} {len(split.client_train[pid]):>6} {len(split.client_test[pid]):>5}"
            f" {int((hist[pid] > 0).sum()):>3} | " + " ".join(f"{int(v):>5}" for v in hist[pid])
        )
    lines.append(
        f"{'total':>6} {int(hist.sum()):>6} {sum(len(t) for t in split.client_test):>5}     | "
        + " ".join(f"{int(v):>5}" for v in hist.sum(axis=0))
    )
    lines.append(f"transfer set: {len(split.transfer)} samples (labels used only by pretrain-epochs)")
    return lines
