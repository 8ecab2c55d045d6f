"""The client step as fedkd/training.py did it at f8a4244 ("before"), kept so that
bench/throughput.py measures before and after side by side in one run.

``reference_step()`` swaps fedkd.training's two loops (``_fit``: training, ``_logits``:
evaluation and prediction) for these, and every caller (local_train, distill, distill_steps,
accuracy, predict_proba, so every engine) runs the old code: for-loop Adam, each mini-batch
indexed out of the data per step, the default memory layout, evaluation in batches of
EVAL_BATCH (2048) whatever the model. The computation is the old one operation for operation
(the same numbers as f8a4244). One difference in time only: it enters fedkd.training's
``_autocast`` of today, which skips a disabled ``torch.autocast`` (~15 us a step, ~2 % of the
mlp's step), so the before/after ratios understate the change by up to that much.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

import fedkd.training as training


def _batches(n: int, batch_size: int, generator: torch.Generator, samples: int) -> Iterator[torch.Tensor]:
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-samples // n))])[:samples]
    for start in range(0, samples, batch_size):
        yield order[start : start + batch_size]


def reference_fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: training.ModelLoss,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    samples_per_epoch: int | None = None,
) -> training.FitStats:
    model.train()
    device = training._device(model)
    samples = len(inputs) if samples_per_epoch is None else samples_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last, processed, steps = float("nan"), 0, 0
    for _ in range(epochs):
        total, seen = 0.0, 0
        for idx in _batches(len(inputs), batch_size, generator, samples):
            optimizer.zero_grad()
            with training._autocast(device):
                loss = loss_fn(model, inputs[idx].to(device), targets[idx].to(device))
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            steps += 1
        last, processed = total / max(seen, 1), processed + seen
    return training.FitStats(last, processed, steps)


@torch.inference_mode()
def reference_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    model.eval()
    device = training._device(model)
    for i in range(0, len(x), batch_size):
        with training._autocast(device):
            yield model(x[i : i + batch_size].to(device)).float().cpu()


@contextmanager
def reference_step(enabled: bool = True) -> Iterator[None]:
    """fedkd.training runs the step as before while inside (a no-op when not ``enabled``)."""
    if not enabled:
        yield
        return
    saved = training._fit, training._logits
    training._fit, training._logits = reference_fit, reference_logits
    try:
        yield
    finally:
        training._fit, training._logits = saved
