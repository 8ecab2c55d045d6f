"""Plain torch loops for one client: local training, soft predictions, distillation, evaluation.

Every loop takes an explicit ``torch.Generator`` for batch order, so results depend only on the
seed, never on which engine or process ran the client.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.losses import kd_loss


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    loss_of_batch,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    """Adam over shuffled mini-batches; returns the mean loss of the last epoch."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = float("nan")
    for _ in range(epochs):
        total, seen = 0.0, 0
        for idx in _batches(len(x), batch_size, generator):
            optimizer.zero_grad()
            loss = loss_of_batch(idx)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        last = total / max(seen, 1)
    return last


def local_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    """Cross-entropy on private data. x: (N, C, H, W) float, y: (N,) int64."""
    return _fit(
        model, x, lambda idx: F.cross_entropy(model(x[idx]), y[idx]), epochs, batch_size, lr, generator
    )


def distill(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    """Match a personalised soft target on the transfer set. targets: (N_t, C) on the simplex."""
    return _fit(
        model,
        x,
        lambda idx: kd_loss(model(x[idx]), targets[idx], temperature),
        epochs,
        batch_size,
        lr,
        generator,
    )


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, temperature: float, batch_size: int = 512) -> np.ndarray:
    """Soft predictions softmax(logits / T): (N, C, H, W) -> (N, C) float64 numpy."""
    model.eval()
    chunks = [
        F.softmax(model(x[i : i + batch_size]) / temperature, dim=1) for i in range(0, len(x), batch_size)
    ]
    return torch.cat(chunks).double().cpu().numpy()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    if len(x) == 0:
        return float("nan")
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return correct / len(x)
