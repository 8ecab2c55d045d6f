"""Plain torch loops for one client: local training, soft predictions, distillation, evaluation.

Every loop takes an explicit ``torch.Generator`` for batch order, so results depend only on the
seed, never on which engine or process ran the client. Data tensors stay on the CPU; mini-batches
move to the model's device (CUDA on edge GPUs) a chunk at a time, optionally under bfloat16
autocast. Speed choices (fused Adam, chunked gathers, channels-last convolutions, cache-sized
evaluation batches) are measured in bench/throughput.py and explained in docs/throughput.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.errors import ConfigError
from fedkd.fused_adam import FusedAdam
from fedkd.losses import kd_loss
from fedkd.models import split_classifier

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


def _autocast(device: torch.device) -> AbstractContextManager:
    if not (_MIXED_PRECISION.get() and device.type == "cuda"):
        return nullcontext()  # entering a disabled autocast costs ~15 us a step
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _order(n: int, generator: torch.Generator, samples: int) -> torch.Tensor:
    """One epoch's shuffled row indices into n rows, ``samples`` long: fresh permutations chained
    (or one cut short), so a client that holds data out (the guard) processes as many samples as
    one that trains on all of it, and a server makes exactly its number of distillation steps."""
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-samples // n))])[:samples]


GATHER_ROWS = 4096  # rows gathered in one copy (and moved to the device at once), not per step


def _batches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    layout: torch.memory_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in ``order``: rows gathered a chunk at a time, then sliced (one copy per chunk
    instead of two per step; the same rows as indexing each batch). ``index_select`` copies rows
    several times faster than advanced indexing (``x[rows]``) on CPU."""
    chunk = max(1, GATHER_ROWS // batch_size) * batch_size
    for lo in range(0, len(order), chunk):
        rows = order[lo : lo + chunk]
        xs = inputs.index_select(0, rows).to(device, memory_format=layout)  # (chunk, C, H, W)
        ts = targets.index_select(0, rows).to(device)
        for start in range(0, len(rows), batch_size):
            yield xs[start : start + batch_size], ts[start : start + batch_size]


@contextmanager
def _conv_layout(model: nn.Module) -> Iterator[torch.memory_format]:
    """Channels-last while the loops run, for models with convolutions: oneDNN's pooling and
    convolutions are several times faster on it on CPU (bench/throughput.py). The weights go back
    to the default layout afterwards, so state dicts and checkpoints look as before."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        yield torch.contiguous_format
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield torch.channels_last
    finally:
        model.to(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class FitStats:
    loss: float  # mean loss of the last epoch
    samples: int  # samples processed over all epochs
    steps: int = 0  # optimiser steps over all epochs (what the step budget counts)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (B, C), targets) -> scalar
# (model, inputs (B, C, H, W), targets) -> scalar: a loss that reads more than the logits (the
# data-free algorithms' regularisers read the representation or the labels' class knowledge)
ModelLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def on_logits(loss_fn: LossFn) -> ModelLoss:
    """A loss of the logits as a loss of the model."""
    return lambda model, xb, tb: loss_fn(model(xb), tb)


CROSS_ENTROPY: ModelLoss = on_logits(F.cross_entropy)


def _fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: ModelLoss,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    samples_per_epoch: int | None = None,
) -> FitStats:
    """Adam over shuffled mini-batches (a fresh optimiser per call, as every phase gets)."""
    model.train()
    device = _device(model)
    samples = len(inputs) if samples_per_epoch is None else samples_per_epoch
    last, processed, steps = float("nan"), 0, 0
    with _conv_layout(model) as layout:
        optimizer = FusedAdam(model.parameters(), lr)
        for _ in range(epochs):
            total, seen = 0.0, 0
            order = _order(len(inputs), generator, samples)
            for xb, tb in _batches(inputs, targets, order, batch_size, device, layout):
                optimizer.zero_grad()
                with _autocast(device):
                    loss = loss_fn(model, xb, tb)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(xb)
                seen += len(xb)
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
    loss: ModelLoss = CROSS_ENTROPY,
) -> FitStats:
    """Cross-entropy (or ``loss``: cross-entropy plus a data-free algorithm's regulariser) on
    private data. x: (N, C, H, W) float, y: (N,) int64."""

    return _fit(model, x, y, loss, epochs, batch_size, lr, generator, samples_per_epoch)


def _kd(temperature: float) -> ModelLoss:
    """Distillation loss at ``temperature`` (in float32 under bfloat16 autocast)."""
    return on_logits(lambda logits, targets: kd_loss(logits.float(), targets, temperature))


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

    return _fit(model, x, targets, _kd(temperature), epochs, batch_size, lr, generator)


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

    return _fit(model, x, targets, _kd(temperature), 1, batch_size, lr, generator, steps * batch_size)


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
CPU_CONV_EVAL_BATCH = 64  # at most, for conv nets on CPU: 2048 rows spill the caches (2-5x slower)


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Logits (B, C) per batch of at most ``batch_size`` rows, without autograd. The layout
    changes outside inference mode: weights made inside it could not be trained afterwards."""
    model.eval()
    device = _device(model)
    with _conv_layout(model) as layout, torch.inference_mode():
        if layout == torch.channels_last and device.type == "cpu":
            batch_size = min(batch_size, CPU_CONV_EVAL_BATCH)
        for i in range(0, len(x), batch_size):
            with _autocast(device):
                yield model(x[i : i + batch_size].to(device, memory_format=layout)).float().cpu()


def predict_proba(
    model: nn.Module, x: torch.Tensor, temperature: float, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Soft predictions softmax(logits / T): (N, C, H, W) -> (N, C) float64 numpy."""
    chunks = [F.softmax(z / temperature, dim=1) for z in _logits(model, x, batch_size)]
    return torch.cat(chunks).double().numpy()


def representations(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The classifier's input (B, D) for every row: (N, C, H, W) -> (N, D) float64 numpy."""
    body, _ = split_classifier(model)
    return torch.cat(list(_logits(body, x, batch_size))).double().numpy()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    if len(x) == 0:
        return float("nan")
    correct, start = 0, 0
    for z in _logits(model, x, batch_size):
        correct += int((z.argmax(dim=1) == y[start : start + len(z)]).sum())
        start += len(z)
    return correct / len(x)
