"""Candidate changes to the client step, each timed against the step as it is, side by side in one
run: what a change would buy before anyone adopts it, and whether it keeps the numbers.

    python bench/step_candidates.py [--reps 7] [--candidates NAME ...]
        [--out bench/results/step_candidates.txt]

Each candidate rewrites a freshly built model of the zoo; both models then train with
fedkd.training.local_train at batch 32 on the same random rows (MNIST- or CIFAR-shaped), one
epoch of 256 rows a timing, the two alternating, on one thread, timed in that thread's CPU time
(time the thread waits for the core is not counted; caches and memory shared with other work
still slow it), best of --reps. The ``none`` rows (the model against an identical copy) show how
far two equal steps differ here: a ratio inside their spread is no gain. "same bits" says
whether the two models' weights are equal after the same training: a candidate that keeps them
can be adopted without regenerating a published run; one that does not moves every number it
touches. The candidates are those docs/throughput.md lists as measured and not kept, and one
estimate (``tanh-as-clamp``, another model): how much of lenet5's step its tanh takes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # run as a module by the tests

from common import provenance  # noqa: E402 - bench/ is on the path

from fedkd.atomic import atomic_write  # noqa: E402
from fedkd.models import build_model  # noqa: E402
from fedkd.training import local_train  # noqa: E402

SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
BATCH, ROWS = 32, 256


def _replace(model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]):
    """``model`` with every submodule that ``match``es swapped for ``make(submodule)``."""
    for name, child in model.named_children():
        if match(child):
            setattr(model, name, make(child))
        else:
            _replace(child, match, make)
    return model


def inplace_activations(model: nn.Module) -> nn.Module:
    """ReLU and ReLU6 overwrite their input: one activation-sized allocation less per layer."""
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.Hardtanh)):
            module.inplace = True
    return model


class _BlockAverage(torch.autograd.Function):
    """Adaptive average pooling over whole blocks (H, W multiples of the output) whose backward
    spreads g / kh / kw in the input's own layout, where torch's CPU backward receives an NCHW
    gradient (after Flatten) for a channels-last input. torch's NCHW kernel divides by kh, then
    kw, as here; its channels-last kernel divides once by kh * kw and so rounds differently."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        ctx.shape, ctx.size = x.shape, size
        return F.adaptive_avg_pool2d(x, size)  # (B, C, oh, ow)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # g: (B, C, oh, ow)
        b, c, h, w = ctx.shape
        oh, ow = ctx.size
        kh, kw = h // oh, w // ow
        delta = g.div(kh).div(kw).permute(0, 2, 3, 1)  # (B, oh, ow, C), as torch's NCHW kernel rounds
        spread = delta[:, :, None, :, None, :].expand(b, oh, kh, ow, kw, c).reshape(b, h, w, c)
        return spread.permute(0, 3, 1, 2), None  # (B, C, H, W), channels-last in memory


class _BlockPool(nn.AdaptiveAvgPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = (self.output_size,) * 2 if isinstance(self.output_size, int) else self.output_size
        if x.shape[-2] % oh or x.shape[-1] % ow or (oh, ow) == (1, 1):  # torch takes a mean for (1, 1)
            return super().forward(x)
        return _BlockAverage.apply(x, (oh, ow))


def layout_pool_backward(model: nn.Module) -> nn.Module:
    return _replace(model, lambda m: type(m) is nn.AdaptiveAvgPool2d, lambda m: _BlockPool(m.output_size))


class _SigmoidTanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(2 * x) * 2 - 1  # tanh's identity, on torch's sigmoid kernel instead of tanh's


def _tanh_as(make: Callable[[], nn.Module]) -> Callable[[nn.Module], nn.Module]:
    """The rewrite that puts ``make()`` where each Tanh layer was."""
    return lambda model: _replace(model, lambda m: isinstance(m, nn.Tanh), lambda m: make())


class _TanhBySigmoid(torch.autograd.Function):
    """tanh as 2 sigmoid(2x) - 1 forward, on torch's sigmoid kernel instead of its tanh kernel,
    and tanh's own backward on the output: g (1 - y^2), one kernel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # x: any shape
        y = torch.sigmoid(x * 2).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(g, y)


class _TanhFunction(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _TanhBySigmoid.apply(x)


tanh_as_clamp = _tanh_as(nn.Hardtanh)  # another model, timed as an estimate of tanh's share


# candidate -> (rewrite, the models it is timed on)
CANDIDATES: dict[str, tuple[Callable[[nn.Module], nn.Module], tuple[str, ...]]] = {
    "none": (lambda model: model, ("cnn-s", "cnn-m", "lenet5", "mobilenet-s", "resnet8")),
    "inplace-activations": (inplace_activations, ("cnn-s", "cnn-m", "mobilenet-s", "resnet8")),
    "layout-pool-backward": (layout_pool_backward, ("cnn-s", "cnn-m", "lenet5")),
    "tanh-via-sigmoid": (_tanh_as(_SigmoidTanh), ("lenet5",)),
    "tanh-via-sigmoid-fn": (_tanh_as(_TanhFunction), ("lenet5",)),
    "tanh-as-clamp": (tanh_as_clamp, ("lenet5",)),
    "tanh-as-clamp+pool": (lambda model: tanh_as_clamp(layout_pool_backward(model)), ("lenet5",)),
}


def compare(name: str, shape: tuple[int, int, int], rewrite, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(ROWS, *shape, generator=g), torch.randint(0, 10, (ROWS,), generator=g)
    models = {
        "now": build_model(name, shape, 10, seed=0),
        "candidate": rewrite(build_model(name, shape, 10, seed=0)),
    }
    generators = {k: torch.Generator().manual_seed(0) for k in models}
    best = dict.fromkeys(models, float("inf"))
    for rep in range(reps + 1):  # the first round warms both up, untimed
        for key in sorted(models, reverse=rep % 2 == 1):  # alternate which goes first
            start = time.thread_time()
            local_train(models[key], x, y, epochs=1, batch_size=BATCH, lr=1e-3, generator=generators[key])
            if rep:
                best[key] = min(best[key], time.thread_time() - start)
    now, candidate = models["now"].state_dict(), models["candidate"].state_dict()
    same = now.keys() == candidate.keys() and all(torch.equal(now[k], candidate[k]) for k in now)
    return {"now": ROWS / best["now"], "candidate": ROWS / best["candidate"], "same_bits": same}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give 1 or more")
    return value


def _chosen(names: list[str]) -> str:
    """The --candidates option as the command line gave it, or nothing when all were timed."""
    return "" if names == list(CANDIDATES) else " --candidates " + " ".join(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=_positive, default=7, help="Timings per model (best counts).")
    parser.add_argument(
        "--candidates",
        nargs="+",
        choices=list(CANDIDATES),
        default=list(CANDIDATES),
        metavar="NAME",
        help=f"The candidates to time (default: all of {', '.join(CANDIDATES)}).",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "step_candidates.txt"))
    args = parser.parse_args()
    twice = sorted({name for name in args.candidates if args.candidates.count(name) > 1})
    if twice:
        parser.error(f"--candidates names {', '.join(twice)} twice; allowed: each candidate once")
    torch.set_num_threads(1)
    lines = [
        f"# python bench/step_candidates.py --reps {args.reps}{_chosen(args.candidates)} ({provenance()})",
        "Training step, batch 32, one thread (samples/s, best of the reps; the two alternate)",
        f"{'candidate':>21} {'data':>5} {'model':>11} | {'now':>7} {'candidate':>9} | ratio | same bits",
    ]
    for name in ("cnn-s", "cnn-m"):  # an untimed warm-up before the first row
        compare(name, SHAPES["mnist"], lambda model: model, 3)
    for candidate in args.candidates:
        rewrite, models = CANDIDATES[candidate]
        for data, shape in SHAPES.items():
            for name in models:
                r = compare(name, shape, rewrite, args.reps)
                lines.append(
                    f"{candidate:>21} {data:>5} {name:>11} | {r['now']:7.0f} {r['candidate']:9.0f} | "
                    f"{r['candidate'] / r['now']:.3f} | {'yes' if r['same_bits'] else 'no'}"
                )
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    atomic_write(args.out, lambda handle: handle.write(text))


if __name__ == "__main__":
    main()
