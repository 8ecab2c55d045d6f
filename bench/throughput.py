"""Client throughput benchmark: the step before and after, side by side in one run, against the
machine's measured peak.

    python bench/throughput.py [--data-dir DIR] [--threads 1 2] [--models ...] [--reps 5] [--seeds 2]
        [--parts DIR]  # keep each part's figures there; rerunning measures only the missing parts
        [--device cuda]  # the same measurements on a GPU (peak: float32 matmul there), with memory

Per model of the zoo, on MNIST-shaped (1x28x28) and CIFAR-shaped (3x32x32) inputs, 10 classes:
samples/s and GFLOP/s of the training step (fedkd.training.local_train at batch 32: forward,
backward, Adam) and of evaluation (fedkd.training.accuracy of 2048 rows: one batch of EVAL_BATCH
before; after, convolutional models take CPU_CONV_EVAL_BATCH = 64 rows at a time), beside the
dense matmul peak measured here (2048 x 2048 float32), on 1 and 2 intra-op threads. "before" is
the step of f8a4244 (bench/reference_step.py), "after" fedkd/training.py now; the two alternate,
best of --reps each, timed at one thread in its CPU time (both robust to other load on the
machine). FLOPs are counted from the layer shapes (forward hooks on Linear and Conv2d: 2 x
multiply-adds), training = 3 x forward (the usual convention; the exact count is lower where a
layer needs no input gradient: 2.1x forward for the mlp). Then one core's share of a sweep: runs
per hour of a knfu-mnist cell (what the report calls the default MNIST sweep cell), timed (wall)
through the sweep's own runner
(experiments/sweep.py execute(): in-process engine, one worker, as each run of a 2-worker sweep
on 2 cores gets), where the time of a round goes inside the client steps, and whether several
seeds as one vmapped computation (torch.func) beat running them one by one.
Targets: mlp training step >= 50 % of the single-thread matmul peak; conv models >= 1.5x
samples/s; the sweep cell >= 1.5x runs per hour (here per core; bench/sweep_cell.py measures the
fair cell on the whole machine).
With ``--device cuda`` every model and the cell run on the GPU (the client's data stays on the
host, moved a chunk at a time, as clients do), the clock waits for the GPU's queue, the peak is
the GPU's float32 matmul (4096 x 4096; torch's defaults, as fedkd trains: matmuls in full float32,
cuDNN's convolutions in TF32), each training row adds the GPU memory one client's training phase
allocates (max_memory_allocated, MB: a lower bound, without the CUDA context and the allocator's
cache), and the cell line client rounds per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import measure_in_fresh_process  # noqa: E402 - bench/ is on the path
from reference_step import reference_step  # noqa: E402

SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
VARIANTS = ("before", "after")
BATCH, TRAIN_ROWS, EVAL_ROWS, TARGET_S = 32, 256, 2048, 0.3  # a timing lasts about TARGET_S seconds
CELL = "experiments/sweeps/knfu-mnist.toml"
CELL_AXES = {"max-client-samples": 100, "alpha": 0.5}  # the default cell; algorithms below
CELL_ALGORITHMS = ("local", "knfu")


def forward_flops(model: nn.Module, shape: tuple[int, int, int]) -> list[float]:
    """FLOPs of one sample's forward pass, per Linear and Conv2d in call order: 2 x multiply-adds.
    A training step is 3 x their sum by convention; exactly, the first layer needs no input
    gradient (3 x sum - first)."""
    flops: list[float] = []

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):  # per output element: (C_in / groups) * kh * kw MACs
            kh, kw = module.kernel_size
            flops.append(2.0 * output.numel() * module.in_channels // module.groups * kh * kw)
        else:
            flops.append(2.0 * output.numel() * module.in_features)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for handle in handles:
        handle.remove()
    return flops


class MatmulPeak:
    """GFLOP/s of a 2048 x 2048 float32 matmul at the current thread count: the best of timings
    spread over the whole measurement (``sample()`` between the steps' timings), so that the peak
    and the steps see the same quiet moments of a shared machine."""

    def __init__(self, clock: Callable[[], float], device: str = "cpu") -> None:
        self.clock = clock
        self.n = 2048 if device == "cpu" else 4096  # a GPU needs a larger product to reach its peak
        self.a, self.b = (torch.randn(self.n, self.n, device=device) for _ in range(2))
        self.best = float("inf")
        self.a @ self.b  # warm-up

    def sample(self) -> None:
        start = self.clock()
        self.a @ self.b
        self.best = min(self.best, self.clock() - start)

    @property
    def gflops(self) -> float:
        return 2 * self.n**3 / self.best / 1e9


def clock_for(threads: int, device: str = "cpu") -> Callable[[], float]:
    """One thread: that thread's CPU time (time another process holds the core is not counted);
    more: wall time (CPU time would count threads waiting for each other). On a GPU: wall time
    once its queue has run dry (kernels run asynchronously)."""
    if device != "cpu":

        def synced() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        return synced
    return time.thread_time if threads == 1 else time.perf_counter


def _train_seconds(
    name: str, shape, epochs: int, x, y, clock: Callable[[], float], device: str = "cpu"
) -> float:
    from fedkd.models import build_model
    from fedkd.training import local_train

    # outside the timing: a per-call cost, not the step's
    model = build_model(name, shape, 10, seed=0).to(device)
    start = clock()
    local_train(
        model, x, y, epochs=epochs, batch_size=BATCH, lr=1e-3, generator=torch.Generator().manual_seed(0)
    )
    return clock() - start


def _eval_seconds(model: nn.Module, x, y, repeat: int, clock: Callable[[], float]) -> float:
    from fedkd.training import accuracy

    start = clock()
    for _ in range(repeat):
        accuracy(model, x, y)
    return clock() - start


def train_memory_mb(name: str, shape, x, y, device: str) -> float:
    """GPU memory one client's training phase peaks at (weights, Adam's moments, activations,
    its data chunk), beyond what was allocated before: a lower bound on what packing a client onto
    a GPU costs (its process's CUDA context and the allocator's cache come on top)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    _train_seconds(name, shape, 1, x, y, time.perf_counter, device)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def step_rows(
    models: list[str], threads: int, reps: int, peak: MatmulPeak, device: str = "cpu"
) -> list[dict]:
    """Training and evaluation samples/s per model and input shape, before and after, alternating
    (and the matmul peak sampled between them)."""
    from fedkd.models import build_model

    clock = peak.clock
    rows = []
    for dataset, shape in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(TRAIN_ROWS, *shape, generator=g), torch.randint(0, 10, (TRAIN_ROWS,), generator=g)
        xe, ye = torch.randn(EVAL_ROWS, *shape, generator=g), torch.randint(0, 10, (EVAL_ROWS,), generator=g)
        for name in models:
            model = build_model(name, shape, 10, seed=0)
            flops = forward_flops(model, shape)
            model.to(device)
            if device != "cpu":  # one untimed call per variant: cuDNN set-up, lazily loaded kernels
                for variant in VARIANTS:
                    with reference_step(variant == "before"):
                        _train_seconds(name, shape, 1, x, y, clock, device)
                        _eval_seconds(model, xe, ye, 1, clock)
            with reference_step():  # size each timing from the slower step
                epochs = max(1, round(TARGET_S / _train_seconds(name, shape, 1, x, y, clock, device)))
                repeat = max(1, round(TARGET_S / _eval_seconds(model, xe, ye, 1, clock)))
            best = {(v, k): float("inf") for v in VARIANTS for k in ("train", "eval")}
            for _ in range(reps):
                peak.sample()
                for variant in VARIANTS:
                    with reference_step(variant == "before"):
                        train_s = _train_seconds(name, shape, epochs, x, y, clock, device) / (
                            epochs * TRAIN_ROWS
                        )
                        eval_s = _eval_seconds(model, xe, ye, repeat, clock) / (repeat * EVAL_ROWS)
                    best[variant, "train"] = min(best[variant, "train"], train_s)
                    best[variant, "eval"] = min(best[variant, "eval"], eval_s)
            row = {"dataset": dataset, "model": name, "threads": threads, "fwd_mflop": sum(flops) / 1e6}
            row["exact_train_mflop"] = (3 * sum(flops) - flops[0]) / 1e6
            for (variant, kind), seconds in best.items():
                row[f"{kind}_{variant}"] = 1 / seconds  # samples/s
            if device != "cpu":
                row["train_mem_mb"] = train_memory_mb(name, shape, x, y, device)
            rows.append(row)
    return rows


def cell_runs(seeds: int, reps: int, data_dir: str, device: str = "cpu") -> dict:
    """Seconds per run of the default MNIST sweep cell through experiments/sweep.py's runner: each
    run (seed x algorithm) ``reps`` times per step, before and after alternating, its fastest time
    counted (one warm-up run first: imports, data files). Also the largest change in final ALMA
    between the two steps, and whether repeats of one run gave the same ALMA."""
    import logging
    import tempfile

    from experiments.sweep import execute, expand, load_sweep

    logging.getLogger("flwr").setLevel(logging.ERROR)
    planned = expand(load_sweep(ROOT / CELL), {"data-dir": data_dir, "workers": 1, "device": device})
    cell = [
        r
        for r in planned
        if all(r.axes[k] == v for k, v in CELL_AXES.items())
        and r.axes["algorithm"] in CELL_ALGORITHMS
        and r.axes["seed"] < seeds
    ]
    best: dict[tuple[str, str], float] = {}
    alma: dict[tuple[str, str], set[float]] = {}
    with tempfile.TemporaryDirectory() as out:
        execute(cell[-1], f"{out}/warm-up")  # not counted
        for run in cell:
            for rep in range(reps):
                for variant in VARIANTS:
                    with reference_step(variant == "before"):
                        start = time.perf_counter()
                        row = execute(run, f"{out}/{variant}-{rep}")
                        seconds = time.perf_counter() - start
                    if row["status"] != "ok":
                        sys.exit(f"cell run failed: {row.get('error')}")
                    key = (variant, run.run_id)
                    best[key] = min(best.get(key, float("inf")), seconds)
                    alma.setdefault(key, set()).add(row["final"]["alma"])
    ids = [run.run_id for run in cell]
    knfu = next(r for r in cell if r.axes["algorithm"] == "knfu" and r.axes["seed"] == 0)
    return {
        "seconds": {v: [best[v, i] for i in ids] for v in VARIANTS},
        "client_rounds": knfu.config.data.num_clients * knfu.config.run.rounds,  # per run
        "runs": len(ids),
        "alma_max_delta": max(abs(max(alma["after", i]) - max(alma["before", i])) for i in ids),
        "repeatable": all(len(values) == 1 for values in alma.values()),
        "anatomy": round_anatomy(knfu),
    }


# client_steps functions timed inside a round (looked up by name: absent ones are left out)
PARTS = (
    "training_data",
    "run_plan",
    "_model",
    "train_private",
    "distill_transfer",
    "predict_proba",
    "evaluate_client",
    "_snapshot",
)


@contextmanager
def timed_parts(spent: dict[str, float]) -> Iterator[None]:
    """While inside, each client_steps function named in ``spent`` adds its seconds there."""
    import fedkd.client_steps as steps

    def timed(part: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start

        return wrapper

    originals = {part: getattr(steps, part) for part in spent}
    try:
        for part, fn in originals.items():
            setattr(steps, part, timed(part, fn))
        yield
    finally:
        for part, fn in originals.items():
            setattr(steps, part, fn)


def round_anatomy(run) -> dict:
    """Where a round's client time goes: bench/common.py's plain loop (fedkd's client steps one
    client at a time, no engine), each part of the steps timed; mean seconds per round over
    rounds 2..R, before and after."""
    from common import plain_loop

    import fedkd.client_steps as steps

    result = {}
    for variant in VARIANTS:
        spent = {part: 0.0 for part in PARTS if hasattr(steps, part)}
        records: list[dict] = []

        def on_round(record: dict, spent=spent, records=records) -> None:
            records.append({**record, **spent})
            spent.update(dict.fromkeys(spent, 0.0))

        with timed_parts(spent), reference_step(variant == "before"):
            plain_loop(run.config, on_round)
        later = records[1:] or records
        result[variant] = {k: statistics.mean(r[k] for r in later) for k in ("compute_s", *spent)}
    return result


def seeds_side_by_side(name: str, shape, seeds: int, reps: int, device: str = "cpu") -> dict:
    """Samples/s of ``seeds`` models of one architecture trained one after another (the step
    above) against one vmapped step over their stacked weights (torch.func, one fused Adam)."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    from fedkd.models import build_model

    models = [build_model(name, shape, 10, seed=s).to(device) for s in range(seeds)]
    # on the host, as clients hold their data (local_train moves it); the vmapped step's on the device
    x, y = torch.randn(seeds, TRAIN_ROWS, *shape), torch.randint(0, 10, (seeds, TRAIN_ROWS))
    xd, yd = x.to(device), y.to(device)
    params, buffers = stack_module_state(models)  # each (seeds, ...)
    base = build_model(name, shape, 10, seed=0).to("meta")

    def loss(p, b, xb, yb):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    batched = vmap(grad(loss))
    optimizer = torch.optim.Adam(list(params.values()), lr=1e-3, fused=True)

    def vmapped(steps: int) -> None:
        for s in range(steps):
            rows = slice(s * BATCH % TRAIN_ROWS, s * BATCH % TRAIN_ROWS + BATCH)
            grads = batched(params, buffers, xd[:, rows], yd[:, rows])
            for key, value in params.items():
                value.grad = grads[key]
            optimizer.step()

    def sequential(steps: int) -> None:
        for k in range(seeds):
            _fit_steps(models[k], x[k], y[k], steps)

    steps = TRAIN_ROWS // BATCH
    clock = clock_for(1, device)
    out = {}
    for label, fn in (("sequential", sequential), ("vmap", vmapped)):
        best = float("inf")
        for _ in range(reps):
            start = clock()
            fn(steps)
            best = min(best, clock() - start)
        out[label] = seeds * steps * BATCH / best
    return out


def _fit_steps(model, x, y, steps):
    from fedkd.training import local_train

    local_train(
        model,
        x,
        y,
        epochs=1,
        batch_size=BATCH,
        lr=1e-3,
        generator=torch.Generator().manual_seed(0),
        samples_per_epoch=steps * BATCH,
    )


def measure(what: str, args) -> dict:
    """One part of the benchmark, in this process (called through --one in a fresh one)."""
    if what == "steps":
        torch.set_num_threads(args.threads[0])
        peak = MatmulPeak(clock_for(args.threads[0], args.device), args.device)
        for _ in range(args.reps):
            peak.sample()
        rows = step_rows(args.models, args.threads[0], args.reps, peak, args.device)
        return {"peak": peak.gflops, "rows": rows}
    torch.set_num_threads(1)
    if what == "cell":
        return cell_runs(args.seeds, args.cell_reps, args.data_dir, args.device)
    return {
        name: seeds_side_by_side(name, SHAPES["mnist"], args.stack, args.reps, args.device)
        for name in ("mlp", "cnn-s")
    }


def step_table(result: dict, kind: str) -> list[str]:
    factor = 3 if kind == "train" else 1
    memory = kind == "train" and any("train_mem_mb" in r for part in result.values() for r in part["rows"])
    lines = [
        f"{'data':>5} {'model':>11} thr  fwd MFLOP | {'before s/s':>10} GFLOP/s %peak |"
        f" {'after s/s':>10} GFLOP/s %peak | after/before" + (" | GPU MB/client" if memory else "")
    ]
    for threads, part in sorted(result.items()):
        for row in part["rows"]:
            cells = []
            for variant in VARIANTS:
                rate = row[f"{kind}_{variant}"]
                gflops = factor * row["fwd_mflop"] * rate / 1e3
                cells.append(f"{rate:10.0f} {gflops:7.1f} {100 * gflops / part['peak']:5.0f}")
            ratio = row[f"{kind}_after"] / row[f"{kind}_before"]
            lines.append(
                f"{row['dataset']:>5} {row['model']:>11} {threads:3d} {row['fwd_mflop']:10.2f} | "
                + " | ".join(cells)
                + f" | {ratio:5.2f}x"
                + (f" | {row['train_mem_mb']:14.1f}" if memory else "")
            )
    return lines


def step_verdicts(one: dict) -> list[str]:
    """The step targets, from the single-thread rows (those of the models measured)."""
    lines = []
    for mlp in (r for r in one["rows"] if r["model"] == "mlp" and r["dataset"] == "mnist"):
        share = 3 * mlp["fwd_mflop"] * mlp["train_after"] / 1e3 / one["peak"]
        exact = share * mlp["exact_train_mflop"] / (3 * mlp["fwd_mflop"])
        lines.append(
            f"- mlp training step (mnist, 1 thread): {100 * share:.1f} % of the matmul peak (3 x forward; "
            f"{100 * exact:.1f} % by the exact count), target >= 50 %: {'met' if share >= 0.5 else 'NOT met'}"
        )
    ratios = {
        f"{r['model']}/{r['dataset']}": r["train_after"] / r["train_before"]
        for r in one["rows"]
        if r["model"] != "mlp"
    }
    if ratios:
        low, high = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
        lines.append(
            f"- conv models, training samples/s after/before (1 thread): {ratios[low]:.2f}x ({low}) to "
            f"{ratios[high]:.2f}x ({high}); >= 1.5x: {sum(v >= 1.5 for v in ratios.values())} "
            f"of {len(ratios)}"
        )
    return lines


def report(
    steps: dict, cell: dict | None, stacked: dict | None, seeds: int, device: str = "cpu"
) -> list[str]:
    peaks = ", ".join(f"{t} thread(s) {part['peak']:.1f}" for t, part in sorted(steps.items()))
    size = 2048 if device == "cpu" else 4096
    lines = [f"Device: {device}"]
    if device != "cpu":
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        lines.append(f"TF32: matmul {flags[0]}, cuDNN convolutions {flags[1]} (torch's defaults)")
    lines += [f"Dense matmul peak ({size} x {size} float32, best timing), GFLOP/s: {peaks}", ""]
    lines += ["Training step, batch 32 (local_train: forward, backward, Adam); GFLOP/s = 3 x forward FLOPs;"]
    lines += ["%peak = of the matmul peak at the same thread count; rows at 2 threads need an otherwise idle"]
    lines += ["machine (OpenMP threads wait for each other while another process holds a core)"]
    lines += step_table(steps, "train") + [""]
    lines += [
        "Evaluation (accuracy of 2048 rows: batches of 2048 before; after, 64 for conv models on CPU; "
        "no autograd); GFLOP/s = forward FLOPs"
    ]
    lines += step_table(steps, "eval") + [""]
    if device == "cpu":  # the targets are set for the CPU
        lines += step_verdicts(steps[min(steps)])
    if cell:
        mean = {v: statistics.mean(cell["seconds"][v]) for v in VARIANTS}
        speedup = mean["before"] / mean["after"]
        lines += [
            f"- default MNIST sweep cell ({', '.join(CELL_ALGORITHMS)}; {seeds} seeds; in-process, "
            f"1 worker): {mean['before']:.2f} s -> {mean['after']:.2f} s a run, "
            f"{3600 / mean['before']:.0f} -> {3600 / mean['after']:.0f} runs/hour per core "
            f"({speedup:.2f}x), target >= 1.5x: {'met' if speedup >= 1.5 else 'NOT met'}; final ALMA "
            f"after vs before: largest change {cell['alma_max_delta']:.4f} over {cell['runs']} runs; "
            f"repeats of a run gave {'the same' if cell['repeatable'] else 'DIFFERENT'} numbers; "
            f"{cell.get('client_rounds', float('nan')) / mean['after']:.1f} client rounds per second",
            "",
            "Where a round's client time goes (plain loop over the client steps, knfu cell, seconds per "
            "round of 10 clients):",
        ]
        for variant, parts in cell["anatomy"].items():
            named = {k.strip("_"): v for k, v in parts.items() if k != "compute_s"}
            lines.append(
                f"  {variant:>6}: {parts['compute_s']:.3f} = "
                + ", ".join(f"{k} {v:.3f}" for k, v in named.items())
                + f", rest {parts['compute_s'] - sum(named.values()):.3f}"
            )
    if stacked:
        lines.append("")
        for name, rates in stacked.items():
            lines.append(
                f"- seeds side by side ({name}, mnist, 1 thread): sequential "
                f"{rates['sequential']:.0f} samples/s, vmap {rates['vmap']:.0f} "
                f"({rates['vmap'] / rates['sequential']:.2f}x)"
            )
    return lines


def main() -> None:
    from fedkd.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", choices=MODELS.names(), default=MODELS.names())
    parser.add_argument("--reps", type=int, default=5, help="Timings per variant (best counts).")
    parser.add_argument("--seeds", type=int, default=2, help="Seeds of the sweep cell (0: skip the cell).")
    parser.add_argument("--cell-reps", type=int, default=2, help="Timings of each cell run per variant.")
    parser.add_argument("--stack", type=int, default=8, help="Seeds vmapped together (0: skip).")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.txt"))
    parser.add_argument(
        "--parts", help="Keep each part's measurement in this folder; a part found there is not rerun."
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--one", choices=["steps", "cell", "stack"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    common = [
        "--data-dir",
        args.data_dir,
        "--reps",
        str(args.reps),
        "--device",
        args.device,
        "--models",
        *args.models,
    ]

    def part(name: str, extra: list[str]) -> dict:
        """One part in a fresh process; with --parts, kept there and not measured again."""
        tag = "" if args.device == "cpu" else f"-{args.device}"  # parts of one device only
        kept = Path(args.parts) / f"{name}{tag}.json" if args.parts else None
        if kept and kept.exists():
            return json.loads(kept.read_text())
        result = measure_in_fresh_process(__file__, [*extra, *common], name)
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(result))
        return result

    steps = {t: part(f"steps-{t}", ["--one", "steps", "--threads", str(t)]) for t in args.threads}
    cell = stacked = None
    if args.seeds:
        cell = part("cell", ["--one", "cell", "--seeds", str(args.seeds), "--cell-reps", str(args.cell_reps)])
    if args.stack:
        stacked = part("stack", ["--one", "stack", "--stack", str(args.stack)])
    text = "\n".join(report(steps, cell, stacked, args.seeds, args.device))
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
