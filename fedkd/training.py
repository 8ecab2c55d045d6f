"""Plain torch loops for one client: local training, soft predictions, distillation, evaluation.

Every loop takes an explicit ``torch.Generator`` for batch order, so results depend only on the
seed, never on which engine or process ran the client. Data tensors stay on the CPU; each
mini-batch moves to the model's device (CUDA on edge GPUs), optionally under bfloat16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.errors import ConfigError
from fedkd.losses import kd_loss

_MIXED_PRECISION: ContextVar[bool] = ContextVar("mixed_precision", default=False)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is invalid; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is invalid; allowed: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    return device


@contextmanager
def mixed_precision(enabled: bool) -> Iterator[None]:
    """bfloat16 autocast for the loops run inside (CUDA only; a no-op on CPU)."""
    token = _MIXED_PRECISION.set(enabled)
    try:
        yield
    finally:
        _MIXED_PRECISION.reset(token)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device):
    enabled = _MIXED_PRECISION.get() and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _batches(
    n: int, batch_size: int, generator: torch.Generator, samples: int | None = None
) -> Iterator[torch.Tensor]:
    """One epoch of shuffled mini-batch indices into n rows. ``samples`` makes the epoch that many
    samples long by chaining fresh permutations (or cutting one short): a client that holds data
    out (the guard) still processes as many samples as one that trains on all of it, and a
    server makes exactly its number of distillation steps."""
    samples = n if samples is None else samples
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-samples // n))])[:samples]
    for start in range(0, samples, batch_size):
        yield order[start : start + batch_size]


@dataclass(frozen=True)
class FitStats:
    loss: float  # mean loss of the last epoch
    samples: int  # samples processed over all epochs
    steps: int = 0  # optimiser steps over all epochs (what the step budget counts)


def _fit(
    model: nn.Module,
    n: int,
    loss_of_batch: Callable[[torch.Tensor, torch.device], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    samples_per_epoch: int | None = None,
) -> FitStats:
    """Adam over shuffled mini-batches (a fresh optimiser per call, as every phase gets)."""
    model.train()
    device = _device(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last, processed, steps = float("nan"), 0, 0
    for _ in range(epochs):
        total, seen = 0.0, 0
        for idx in _batches(n, batch_size, generator, samples_per_epoch):
            optimizer.zero_grad()
            with _autocast(device):
                loss = loss_of_batch(idx, device)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            steps += 1
        last, processed = total / max(seen, 1), processed + seen
    return FitStats(last, processed, steps)


def local_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    samples_per_epoch: int | None = None,
) -> FitStats:
    """Cross-entropy on private data. x: (N, C, H, W) float, y: (N,) int64."""

    def loss(idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        return F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))

    return _fit(model, len(x), loss, epochs, batch_size, lr, generator, samples_per_epoch)


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
) -> FitStats:
    """Match a personalised soft target on the transfer set. targets: (N_t, C) on the simplex."""

    def loss(idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        return kd_loss(model(x[idx].to(device)).float(), targets[idx].to(device), temperature)

    return _fit(model, len(x), loss, epochs, batch_size, lr, generator)


def distill_steps(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> FitStats:
    """``steps`` mini-batches of distillation towards fixed targets (a server-side budget counts
    steps, not epochs). x: (N, C, H, W); targets: (N, C) on the simplex."""

    def loss(idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        return kd_loss(model(x[idx].to(device)).float(), targets[idx].to(device), temperature)

    return _fit(model, len(x), loss, 1, batch_size, lr, generator, samples_per_epoch=steps * batch_size)


@contextmanager
def pinned_compute(threads: int, mixed: bool) -> Iterator[None]:
    """Pin intra-op threads (results then do not depend on the host's core count) and set the
    mixed-precision mode for the loops run inside. The thread count is process-wide: when it
    already has this value (the in-process engine sets it once for all its client threads) it is
    left alone, so clients running side by side never change it under each other."""
    before = torch.get_num_threads()
    pin = before != threads
    if pin:
        torch.set_num_threads(threads)
    try:
        with mixed_precision(mixed):
            yield
    finally:
        if pin:
            torch.set_num_threads(before)


EVAL_BATCH = 2048  # evaluation needs no gradients: large batches, fewer Python steps


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    model.eval()
    device = _device(model)
    for i in range(0, len(x), batch_size):
        with _autocast(device):
            yield model(x[i : i + batch_size].to(device)).float().cpu()


def predict_proba(
    model: nn.Module, x: torch.Tensor, temperature: float, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Soft predictions softmax(logits / T): (N, C, H, W) -> (N, C) float64 numpy."""
    chunks = [F.softmax(z / temperature, dim=1) for z in _logits(model, x, batch_size)]
    return torch.cat(chunks).double().numpy()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    if len(x) == 0:
        return float("nan")
    correct, start = 0, 0
    for z in _logits(model, x, batch_size):
        correct += int((z.argmax(dim=1) == y[start : start + len(z)]).sum())
        start += len(z)
    return correct / len(x)
