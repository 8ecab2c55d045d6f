"""`fedkd sweep`: a parameter sweep run (or resumed) from a sweep file (experiments/sweep.py), and
the shipped sweep files it and `fedkd tune` find by name."""

from __future__ import annotations

import os
from pathlib import Path

import click

from experiments.console import progress_bars_wanted
from experiments.stop_signals import stop_on_signals
from fedkd.errors import ConfigError

SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"


def resolve_sweep_file(name: str) -> Path:
    """A path, or the name of a shipped sweep (experiments/sweeps/NAME.toml)."""
    path = Path(name)
    if path.is_file() or path.suffix == ".toml":
        return path
    shipped = SWEEPS_DIR / f"{name}.toml"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.toml")))
    raise ConfigError(f"sweep {name!r} not found; give a .toml path or one of: {names}")


@click.command("sweep")
@click.argument("sweep_file")
@click.option("--out", type=str, help="Folder for runs.jsonl and run results [default: runs/<sweep name>].")
@click.option(
    "--workers", type=int, default=None, help="Runs side by side [default: cores for inprocess, else 1]."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key in every run.")
@click.option("--retry-failed", is_flag=True, help="Run again the configurations recorded as failed.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: --workers processes here; ray: one Ray task per run (docs/scale.md).",
)
@click.option("--ray-address", default="", help="Ray cluster for --executor ray (default: start one here).")
@click.option("--tuned", type=str, help="tuned.toml from fedkd tune (replaces the sweep file's tuned = ...).")
def sweep(
    sweep_file: str,
    out: str | None,
    workers: int | None,
    sets: tuple[str, ...],
    retry_failed: bool,
    executor: str,
    ray_address: str,
    tuned: str | None,
) -> None:
    """Run a parameter sweep; running it again resumes where it stopped."""
    from contextlib import closing
    from dataclasses import replace

    from tqdm import tqdm

    from experiments.run_setup import parse_set_options
    from experiments.sweep import RUNS_FILE, expand, load_sweep, pending_runs, run_sweep
    from experiments.sweep_ray import run_sweep_on_ray
    from fedkd.config_types import check_type_range
    from fedkd.results import prepare_out_dir

    if out is not None:
        check_type_range("--out", out)  # a control character would reach every run's config.toml
    spec = load_sweep(resolve_sweep_file(sweep_file))
    spec = spec if tuned is None else replace(spec, tuned=tuned)
    planned = expand(spec, parse_set_options(sets))
    out_dir = Path(out or Path("runs") / spec.name)
    prepare_out_dir(out_dir)  # a folder that cannot be written is one line now, not a traceback later
    if workers is None:
        engines = {run.config.run.engine for run in planned}
        workers = (os.cpu_count() or 1) if engines == {"inprocess"} else 1
    if workers < 1:
        raise ConfigError(f"--workers={workers} is invalid; allowed: >= 1")
    todo = pending_runs(planned, out_dir / RUNS_FILE, retry_failed)
    click.echo(
        f"sweep {spec.name}: {len(planned)} configurations over {', '.join(spec.axes) or 'no axes'}; "
        f"{len(planned) - len(todo)} already done, {len(todo)} to run "
        + (
            f"as Ray tasks on {ray_address or 'a local Ray'}"
            if executor == "ray"
            else f"with {workers} worker(s)"
        )
        + f" -> {out_dir}"
        + (f"; tuned settings from {spec.tuned}" if spec.tuned else "")
    )
    failed = 0
    bars = progress_bars_wanted()  # elsewhere (a log file, CI) tqdm is silent and each run gets a line
    rows = (
        run_sweep_on_ray(planned, out_dir, retry_failed, ray_address)
        if executor == "ray"
        else run_sweep(planned, out_dir, workers, retry_failed)
    )
    finished = len(planned) - len(todo)
    # closing: a signal stops the runs in flight (experiments/sweep.py) wherever it lands
    with (
        stop_on_signals(),
        closing(rows),
        tqdm(total=len(planned), initial=finished, unit="run", dynamic_ncols=True, disable=not bars) as bar,
    ):
        for row in rows:
            bar.update(1)
            finished += 1
            if row["status"] == "ok":
                axes = " ".join(f"{k}={v}" for k, v in row["axes"].items())
                bar.set_postfix_str(f"{axes}: ALMA {row['final']['alma']:.3f}")
                if not bars:
                    click.echo(f"[{finished}/{len(planned)}] {axes}: ALMA {row['final']['alma']:.3f}")
            else:
                failed += 1
                tqdm.write(f"failed: {row['axes']}: {row['error']}")
    click.echo(f"done: {out_dir / RUNS_FILE}" + (f" ({failed} failed)" if failed else ""))
