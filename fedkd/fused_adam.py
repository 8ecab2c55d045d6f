"""The optimiser every client phase uses: Adam with one fused kernel per step."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.optim.adam import adam

# Adam's settings, as torch.optim.Adam's defaults (every phase uses them)
ADAM = {"amsgrad": False, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "eps": 1e-8, "maximize": False}


class FusedAdam:
    """``torch.optim.Adam(fused=True)``, bit for bit, without the Optimizer class's per-step
    bookkeeping (hooks, state look-ups, zero_grad: ~75 us a step, 10 % of the mlp's step at batch
    32). Fused: one kernel updates every tensor instead of a dozen small ops per tensor (1.5x on
    the mlp's step). A fresh one per phase, as every phase gets a fresh optimiser: the moments
    live here. It may differ from the for-loop Adam in the last bits (docs/throughput.md)."""

    def __init__(self, params: Iterator[nn.Parameter], lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        # one device and one floating dtype: the fused kernel is called directly
        self.one_group = len({(p.device, p.dtype) for p in self.params}) == 1 and all(
            p.dtype in (torch.float32, torch.float64) for p in self.params
        )

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # as Adam: no grad, no step
        if not live:  # nothing to update (the kernels refuse empty lists)
            return
        params = [self.params[i] for i in live]
        lists = (
            params,
            [p.grad for p in params],
            [self.exp_avgs[i] for i in live],
            [self.exp_avg_sqs[i] for i in live],
            [],  # max_exp_avg_sqs: no amsgrad
            [self.steps[i] for i in live],
        )
        if not self.one_group:
            adam(*lists, fused=True, lr=self.lr, **ADAM)
            return
        # the two calls adam(fused=True) makes for a single device and dtype, without its
        # argument checks and regrouping (~20 us a step, 3 % of the mlp's step)
        torch._foreach_add_(lists[-1], 1)
        torch._fused_adam_(*lists, lr=self.lr, grad_scale=None, found_inf=None, **ADAM)
