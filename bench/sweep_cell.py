"""Runs per hour of the fair cell on the whole machine, the step before and after (and a candidate
step beside them): the figure a researcher feels when a fair table needs 10 seeds of every method.

    python bench/sweep_cell.py [--data-dir DIR] [--workers 2] [--seeds 10] [--alpha 0.5]
        [--algorithms local self-distill knfu] [--first before|after] [--candidate NAME] [--out FILE]

The cell is experiments/sweeps/fair-mnist.toml's (the step-matched, tuned protocol of the
published fair comparison: 10 clients, 100 private samples each, 50 rounds) at one alpha: local,
the self-distillation control and KnFu, seeds 0-9, 30 runs. Each variant runs the whole cell
through the sweep's own runner (experiments/sweep.py run_sweep: forked worker processes, one
thread per run), into a fresh folder, timed by the wall clock: "before" with the step of
f8a4244 (bench/reference_step.py, swapped in before the workers fork), "after" with
fedkd/training.py as it is; everything else (engine, server, data) is today's in both, so the
ratio is what the step change buys. Every variant's final ALMAs are compared with the published
docs/results/fair-mnist/runs.csv, run by run, and the counts that agree reported ("after"
reproduces them where the bench's runs are the published runs). "before" must differ from
"after": if every run agrees, the reference step did not reach the workers, and the bench stops.
``--candidate NAME`` adds a third variant, "candidate": the step now with bench/step_candidates.py's
rewrite NAME of every client model (swapped in before the workers fork, as the reference step
is; the bench stops if the rewrite changed no model it built), all three side by side in one run (in reverse
order with ``--first after``): what a candidate that moves the numbers would buy on the whole
cell, into bench/results/sweep_cell_NAME.txt.
``--profile ALGORITHM`` instead profiles that algorithm's seed-0 run of the cell: torch.profiler
over rounds 3-10 of bench/common.py's plain loop (fedkd's client steps and the server's fusion,
one thread; half of those rounds evaluate, as in the 50-round run), the ops that take the most
CPU time, into bench/results/sweep_cell_profile.txt.
Needs an otherwise idle machine (the wall clock counts other work); about 27 minutes on 2 cores,
38 with ``--candidate``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # run as a module by the tests

from common import provenance  # noqa: E402 - bench/ is on the path
from reference_step import reference_step  # noqa: E402

from fedkd.atomic import atomic_write  # noqa: E402
from fedkd.csv_cells import cell as csv_cell  # noqa: E402

SWEEP = ROOT / "experiments" / "sweeps" / "fair-mnist.toml"
PUBLISHED = ROOT / "docs" / "results" / "fair-mnist" / "runs.csv"


def cell(data_dir: str, seeds: int, alpha: float, algorithms: list[str]):
    from experiments.sweep import expand, load_sweep

    planned = expand(load_sweep(SWEEP), {"data-dir": data_dir})
    chosen = [
        r
        for r in planned
        if r.axes["alpha"] == alpha and r.axes["algorithm"] in algorithms and r.axes["seed"] < seeds
    ]
    if len(chosen) != seeds * len(algorithms):
        sys.exit(f"the cell has {len(chosen)} runs, expected {seeds * len(algorithms)}: check the arguments")
    return chosen


@contextmanager
def rewritten_models(candidate: str) -> Iterator[Any]:
    """Every client model built while inside gets step_candidates' rewrite ``candidate``; the
    weights and their names stay, so states and checkpoints load as before. Yields a counter,
    shared with forked workers, that turns positive once the rewrite has changed a model it was
    given (0 afterwards: the swap never ran, or the rewrite changes none of the cell's models)."""
    from step_candidates import CANDIDATES

    import fedkd.client_steps as steps

    rewrite, build, applied = CANDIDATES[candidate][0], steps._model, multiprocessing.Value("i", 0)

    def rewritten(*args):
        model = build(*args)
        if applied.value:  # already shown to take effect: no more comparing
            return rewrite(model)
        layers = repr(model)  # the rewrite may change a layer in place (in-place activations)
        model = rewrite(model)
        if repr(model) != layers:
            with applied.get_lock():
                applied.value += 1
        return model

    steps._model = rewritten
    try:
        yield applied
    finally:
        steps._model = build


def run_cell(
    runs, workers: int, variant: str, candidate: str | None = None
) -> tuple[float, dict[tuple, float]]:
    """Wall seconds of the whole cell, and each run's final ALMA by (algorithm, seed): "before"
    with the reference step, "after" with the step now, "candidate" with the step now and
    ``candidate``'s rewrite of every client model."""
    from experiments.sweep import run_sweep

    chosen = {
        "before": reference_step,
        "after": nullcontext,
        "candidate": lambda: rewritten_models(candidate),
    }[variant]()
    with tempfile.TemporaryDirectory() as out, chosen as applied:
        start = time.perf_counter()
        rows = list(run_sweep(runs, out, workers))
        seconds = time.perf_counter() - start
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        sys.exit(f"cell run failed: {failed[0].get('error')}")
    if variant == "candidate" and applied.value == 0:
        sys.exit(
            f"no client model was rewritten: {candidate} did not reach the workers or changes none of them"
        )
    return seconds, {(r["axes"]["algorithm"], r["axes"]["seed"]): r["final"]["alma"] for r in rows}


def candidate_names() -> list[str]:
    """bench/step_candidates.py's candidates other than ``none``."""
    from step_candidates import CANDIDATES

    return [name for name in CANDIDATES if name != "none"]


def published(alpha: float) -> dict[tuple, str]:
    """The published final ALMA by (algorithm, seed), as runs.csv writes it (12 digits)."""
    with PUBLISHED.open() as handle:
        return {
            (row["algorithm"], int(row["seed"])): row["alma"]
            for row in csv.DictReader(handle)
            if float(row["alpha"]) == alpha and row["status"] == "ok"
        }


def profile_run(run, out: Path) -> None:
    """The ops that take the most CPU time in rounds 3-10 of ``run`` (rounds 1-2 warm up)."""
    import torch
    from common import plain_loop
    from torch.profiler import profile

    torch.set_num_threads(1)
    profiler, seen = profile(), [0]

    def on_round(_record: dict) -> None:
        seen[0] += 1
        if seen[0] == 2:
            profiler.__enter__()

    measured = provenance()  # before the run: the load at its start
    plain_loop(run.config.with_overrides({"rounds": 10}), on_round)
    profiler.__exit__(None, None, None)
    table = profiler.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40
    )
    header = (
        f"# python bench/sweep_cell.py --profile {run.axes['algorithm']} ({measured})\n"
        f"rounds 3-10 of the run {run.axes}, bench/common.py's plain loop, one thread"
    )
    print(table)
    atomic_write(out, lambda handle: handle.write(header + "\n" + table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("FEDKD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--algorithms", nargs="+", default=["local", "self-distill", "knfu"])
    parser.add_argument(
        "--out", help="Default: bench/results/sweep_cell.txt (sweep_cell_NAME.txt with --candidate)."
    )
    parser.add_argument(
        "--first",
        choices=["before", "after"],
        default="before",
        help="before: the reference step, the step now, the candidate; after: the reverse order.",
    )
    parser.add_argument("--profile", metavar="ALGORITHM", help="Profile this algorithm's seed-0 run instead.")
    parser.add_argument(
        "--candidate",
        choices=candidate_names(),
        metavar="NAME",
        help="Also run the step now with this bench/step_candidates.py rewrite of every client model.",
    )
    args = parser.parse_args()
    if args.profile and args.candidate:
        parser.error("--candidate times the whole cell; allowed: --profile or --candidate, not both")
    name = f"sweep_cell_{args.candidate}.txt" if args.candidate else "sweep_cell.txt"
    out = args.out or str(ROOT / "bench" / "results" / name)
    if args.profile:
        run = cell(args.data_dir, 1, args.alpha, [args.profile])[0]
        profile_run(run, ROOT / "bench" / "results" / "sweep_cell_profile.txt")
        return
    if multiprocessing.get_start_method() != "fork":  # the swapped-in step must reach the workers
        sys.exit(f"needs forked workers; this platform starts them by {multiprocessing.get_start_method()}")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    runs = cell(args.data_dir, args.seeds, args.alpha, args.algorithms)
    measured = provenance()
    variants = ["before", "after"] + (["candidate"] if args.candidate else [])
    seconds, alma = {}, {}
    for variant in variants if args.first == "before" else variants[::-1]:
        seconds[variant], alma[variant] = run_cell(runs, args.workers, variant, args.candidate)
        print(f"{variant}: {seconds[variant]:.0f} s", flush=True)
    if alma["before"] == alma["after"]:
        sys.exit("every run gave the same ALMA with both steps: the reference step did not reach the workers")
    lines = report(args, runs, measured, seconds, alma)
    print("\n".join(lines))
    text = "\n".join(lines) + "\n"
    atomic_write(out, lambda handle: handle.write(text))


def report(args: argparse.Namespace, runs: list, measured: str, seconds: dict, alma: dict) -> list[str]:
    """The result lines: each variant's wall time and runs per hour, the ratios, and how many
    runs reproduce the published ALMA."""
    reference = published(args.alpha)
    same = {  # runs whose final ALMA is the published one, as runs.csv writes it
        variant: sum(reference.get(key) == csv_cell(value) for key, value in alma[variant].items())
        for variant in alma
    }
    per_hour = {v: len(runs) * 3600 / s for v, s in seconds.items()}
    labels = {
        "before": "reference step",
        "after": "the step now",
        "candidate": f"the step now with {args.candidate}",
    }
    lines = [
        f"# python bench/sweep_cell.py --workers {args.workers} --seeds {args.seeds} --alpha {args.alpha} "
        f"--algorithms {' '.join(args.algorithms)} --first {args.first}"
        f"{' --candidate ' + args.candidate if args.candidate else ''} ({measured})",
        f"cell: {SWEEP.relative_to(ROOT)} at alpha {args.alpha}, {len(runs)} runs "
        f"({', '.join(args.algorithms)} x {args.seeds} seeds), {args.workers} workers, wall clock",
    ]
    lines += [f"{v} ({labels[v]}): {seconds[v]:.0f} s, {per_hour[v]:.0f} runs/hour" for v in seconds]
    lines.append(f"after/before: {per_hour['after'] / per_hour['before']:.2f}x (target >= 1.5x)")
    if "candidate" in seconds:
        lines.append(
            f"candidate/before: {per_hour['candidate'] / per_hour['before']:.2f}x (target >= 1.5x); "
            f"candidate/after: {per_hour['candidate'] / per_hour['after']:.2f}x"
        )
    lines.append(
        f"final ALMA equal to the published {PUBLISHED.relative_to(ROOT)}: "
        + ", ".join(f"{v} {same[v]} of {len(runs)}" for v in seconds)
    )
    for v, w in (("after", "before"), ("candidate", "after")):
        if v in alma:
            delta = max(abs(alma[v][k] - alma[w][k]) for k in alma[v])
            lines.append(f"final ALMA, {v} against {w}: largest change {delta:.4f}")
    return lines


if __name__ == "__main__":
    main()
