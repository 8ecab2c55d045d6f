"""The ``fedkd`` command line.

Usage errors (bad values, unknown keys, malformed files) print one line and exit with code 2;
nothing is started before the config and the data split have been checked.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from experiments.cli_algorithms import algorithms as algorithms_command
from experiments.cli_deploy import deploy as deploy_group
from experiments.cli_options import CONFIG_OPTIONS, SPLIT_OPTIONS, config_options
from fedkd.config import ConfigError, ExperimentConfig, config_keys, load_config_file

# Shorthand option -> run_config key (the same keys --set accepts).
SHORTHANDS = {
    "dataset": "dataset",
    "num_clients": "num-clients",
    "alpha": "alpha",
    "algorithm": "algorithm",
    "rounds": "rounds",
    "seed": "seed",
    "engine": "engine",
    "data_dir": "data-dir",
    "download": "download",
}


def parse_set_options(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is malformed; expected key=value, e.g. --set beta=5")
        overrides[key.strip()] = value.strip()
    return overrides


def build_config(
    config_file: str | None, shorthands: dict[str, Any], sets: tuple[str, ...], out: str | None
) -> ExperimentConfig:
    """Defaults <- config file <- shorthand options <- --set pairs; then validate."""
    cfg = ExperimentConfig()
    if config_file:
        cfg = cfg.with_overrides(load_config_file(config_file))
    cfg = cfg.with_overrides({SHORTHANDS[k]: v for k, v in shorthands.items() if v is not None})
    cfg = cfg.with_overrides(parse_set_options(sets))
    if out is not None:
        cfg = cfg.with_overrides({"out-dir": str(Path(out).resolve())})
    return cfg.validate()


def describe_federation(cfg: ExperimentConfig) -> list[str]:
    """Build the data split now (errors surface before any engine starts) and describe it."""
    from fedkd.budget import compute_budget
    from fedkd.data.federation import federation
    from fedkd.data.partition import class_histogram
    from fedkd.models import architecture_for, build_model, count_parameters

    dataset, split = federation(cfg.data, cfg.run.seed)
    hist = class_histogram(dataset.train_y, split, dataset.num_classes)
    lines = [
        f"fedkd: {cfg.fusion.algorithm} on {dataset.name} | {cfg.data.num_clients} clients | "
        f"{cfg.data.partitioner} alpha={cfg.data.alpha} | transfer set {len(split.transfer)} | "
        f"{cfg.run.rounds} rounds | engine {cfg.run.engine} | seed {cfg.run.seed}"
    ]
    lines.append(compute_budget(cfg).describe() + f" | eval every {cfg.run.eval_every} round(s)")
    if cfg.privacy.mechanism != "none":
        from fedkd.privacy import PrivacyLedger, noise_scale

        ledger = PrivacyLedger(cfg.privacy, cfg.data.transfer_size)
        lines.append(
            f"privacy: {cfg.privacy.mechanism} noise on {cfg.privacy.noise_on}, clip {cfg.privacy.clip:g}, "
            f"scale {noise_scale(cfg.privacy, cfg.data.transfer_size):.4g}; "
            f"epsilon accounted by {ledger.method}"
        )
    for pid in range(cfg.data.num_clients):
        arch = architecture_for(cfg.model.models, pid, cfg.data.num_clients)
        params = count_parameters(build_model(arch, dataset.input_shape, dataset.num_classes, 0))
        classes = int((hist[pid] > 0).sum())
        lines.append(
            f"  client {pid:>3}: {arch:<11} {params:>9,d} params | train {len(split.client_train[pid]):>5}"
            f" | local test {len(split.client_test[pid]):>4} | {classes} classes"
        )
    return lines


def resumable_run(folder: str) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and results of an unfinished run in ``folder`` (written by `fedkd run --out`)."""
    import json

    from fedkd.results import RESULTS_FILE, saved_run_config

    path = Path(folder) / RESULTS_FILE
    try:
        payload = json.loads(path.read_text())
        flat = saved_run_config(payload)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(f"--resume {folder!r}: no readable fedkd {RESULTS_FILE} there") from None
    if payload.get("status") == "completed":
        raise ConfigError(f"--resume {folder!r}: that run is already completed; nothing to resume")
    cfg = ExperimentConfig().with_overrides({**flat, "out-dir": str(Path(folder).resolve())}).validate()
    return cfg, payload


class OneLineErrors(click.Group):
    """Turn usage and config errors into a single line and exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except (ConfigError, click.UsageError, click.BadParameter) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            click.echo(f"fedkd: error: {' '.join(message.split())}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("fedkd: aborted (results so far are kept, marked interrupted)", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            # a Flower ServerApp thread may still wait for replies that never come: do not join it
            os._exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=OneLineErrors)
@click.option("-v", "--verbose", is_flag=True, help="Show Flower's and Ray's own logs.")
def main(verbose: bool) -> None:
    """fedkd: federated knowledge fusion (KnFu and baselines) on Flower."""
    configure_logging(verbose)


class _DropDeprecationNotices(logging.Filter):
    """run_simulation is how Flower documents binding a config into apps; its notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in record.getMessage()


def configure_logging(verbose: bool) -> None:
    """fedkd logs through a child of Flower's logger, so `flwr run` streams it too."""
    logging.getLogger("flwr.fedkd").setLevel(logging.DEBUG if verbose else logging.INFO)
    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:
        flwr_log.addFilter(_DropDeprecationNotices())


@main.command()
@config_options(*CONFIG_OPTIONS)
@click.option(
    "--out",
    type=str,
    help="Folder for results.json and config.toml [default: runs/<algorithm>-<dataset>-<time>].",
)
@click.option("--dry-run", is_flag=True, help="Check the config and print the split, run nothing.")
@click.option("--overwrite", is_flag=True, help="Replace results.json already in the --out folder.")
@click.option(
    "--resume",
    "resume_dir",
    type=str,
    help="Continue the interrupted run in this folder from its last completed round (its own config).",
)
def run(
    config_file: str | None,
    sets: tuple[str, ...],
    out: str | None,
    dry_run: bool,
    overwrite: bool,
    resume_dir: str | None,
    **shorthands: Any,
) -> None:
    """Run one federated experiment."""
    from experiments.engines import run_experiment
    from fedkd.results import RESULTS_FILE, default_out_dir, prepare_out_dir, round_line

    resume = None
    if resume_dir:
        cfg, resume = resumable_run(resume_dir)
        click.echo(f"resuming {resume_dir} after round {len(resume['rounds'])} of {cfg.run.rounds}")
    else:
        cfg = build_config(config_file, shorthands, sets, out)
    if cfg.run.out_dir and not dry_run and resume is None:
        prepare_out_dir(cfg.run.out_dir, overwrite)  # a bad --out fails now, before the split is built
    for line in describe_federation(cfg):
        click.echo(line)
    if dry_run:
        click.echo("dry run: config and split are valid; nothing was trained")
        return
    if not cfg.run.out_dir:  # every run lands somewhere (a fresh folder, once the split is valid)
        cfg = cfg.with_overrides({"out-dir": str(default_out_dir(cfg).resolve())})
        prepare_out_dir(cfg.run.out_dir, overwrite=False)
    click.echo(f"results: {Path(cfg.run.out_dir) / RESULTS_FILE}")
    start = time.perf_counter()
    results = run_experiment(cfg, lambda rec: click.echo(round_line(rec, cfg.run.rounds)), resume)
    final = results.payload["final"]
    if results.payload.get("stopped"):
        click.echo(results.payload["stopped"])
    click.echo(
        f"done in {time.perf_counter() - start:.1f} s | final ALMA {final['alma']:.4f}"
        f" | global acc {final['global_acc']:.4f}"
    )
    click.echo(f"results: {results.path}")


@main.command()
@config_options(*SPLIT_OPTIONS)
@click.option("--out", type=str, default="runs/partition", show_default=True, help="Folder for the report.")
def partition(config_file: str | None, sets: tuple[str, ...], out: str, **shorthands: Any) -> None:
    """Print the partition report and write a clients x classes heatmap (partition.png)."""
    from experiments.plots import partition_heatmap
    from fedkd.data.federation import federation
    from fedkd.data.partition import class_histogram
    from fedkd.data.report import partition_table

    cfg = build_config(config_file, shorthands, sets, None)
    dataset, split = federation(cfg.data, cfg.run.seed)
    hist = class_histogram(dataset.train_y, split, dataset.num_classes)
    for line in partition_table(hist, split):
        click.echo(line)
    title = (
        f"{dataset.name}: {cfg.data.partitioner} split, {cfg.data.num_clients} clients, seed {cfg.run.seed}"
    )
    click.echo(f"heatmap: {partition_heatmap(hist, Path(out) / 'partition.png', title)}")


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


@main.command()
@click.argument("sweep_file")
@click.option("--out", type=str, help="Folder for runs.jsonl and run results [default: runs/<sweep name>].")
@click.option(
    "--workers", type=int, default=None, help="Runs side by side [default: cores for inprocess, else 1]."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key in every run.")
@click.option("--retry-failed", is_flag=True, help="Run again the configurations recorded as failed.")
def sweep(
    sweep_file: str, out: str | None, workers: int | None, sets: tuple[str, ...], retry_failed: bool
) -> None:
    """Run a parameter sweep; running it again resumes where it stopped."""
    import os

    from tqdm import tqdm

    from experiments.sweep import RUNS_FILE, expand, load_sweep, pending_runs, run_sweep

    spec = load_sweep(resolve_sweep_file(sweep_file))
    planned = expand(spec, parse_set_options(sets))
    out_dir = Path(out or Path("runs") / spec.name)
    if workers is None:
        engines = {run.config.run.engine for run in planned}
        workers = (os.cpu_count() or 1) if engines == {"inprocess"} else 1
    if workers < 1:
        raise ConfigError(f"--workers={workers} is invalid; allowed: >= 1")
    todo = pending_runs(planned, out_dir / RUNS_FILE, retry_failed)
    click.echo(
        f"sweep {spec.name}: {len(planned)} configurations over {', '.join(spec.axes) or 'no axes'}; "
        f"{len(planned) - len(todo)} already done, {len(todo)} to run with {workers} worker(s) -> {out_dir}"
    )
    failed = 0
    with tqdm(total=len(planned), initial=len(planned) - len(todo), unit="run", dynamic_ncols=True) as bar:
        for row in run_sweep(planned, out_dir, workers, retry_failed):
            bar.update(1)
            if row["status"] == "ok":
                axes = " ".join(f"{k}={v}" for k, v in row["axes"].items())
                bar.set_postfix_str(f"{axes}: ALMA {row['final']['alma']:.3f}")
            else:
                failed += 1
                tqdm.write(f"failed: {row['axes']}: {row['error']}")
    click.echo(f"done: {out_dir / RUNS_FILE}" + (f" ({failed} failed)" if failed else ""))


@main.command()
@click.argument("sweep_dir")
@click.option("--out", type=str, help="Folder for report.md and figures [default: SWEEP_DIR].")
@click.option("--run", "run_id", type=str, help="Run id whose weight matrix and partition to show.")
@click.option("--audit", type=str, help="audit.json from `fedkd audit`: adds the privacy trade-off figure.")
@click.option(
    "--reference", default="local", show_default=True, help="Method every other one is compared with."
)
@click.option(
    "--columns",
    default="algorithm",
    show_default=True,
    help="Comma list of axes whose values make the table's columns (methods); "
    "the other non-seed axes make its rows.",
)
def report(
    sweep_dir: str, out: str | None, run_id: str | None, audit: str | None, reference: str, columns: str
) -> None:
    """Per-cell means with 95% CIs, Holm-adjusted paired comparisons, tables and figures of a sweep.

    results.md holds the block the README pastes (pivot table + comparisons), runs.csv the
    per-run numbers it is computed from."""
    from experiments.report import write_report

    axes = [c.strip() for c in columns.split(",") if c.strip()]
    path = write_report(sweep_dir, out, run_id, audit, reference, axes)
    click.echo((path.parent / "results.md").read_text(), nl=False)
    click.echo(f"report: {path}")


@main.command()
@click.argument("results_file")
@click.option("--out", type=str, help="Folder for the figures [default: beside RESULTS_FILE].")
def plot(results_file: str, out: str | None) -> None:
    """Figures of one run's results.json."""
    import json

    from experiments.plots import run_figures

    path = Path(results_file)
    if not path.is_file():
        raise ConfigError(f"{results_file!r} does not exist; allowed: a fedkd results.json")
    try:
        history = json.loads(path.read_text())
        history["rounds"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise ConfigError(f"{results_file!r} is not a fedkd results.json with at least one round") from None
    try:
        figures = run_figures(history, Path(out) if out else path.parent)
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{results_file!r} lacks what the figures need ({type(exc).__name__}: {exc}); "
            "allowed: a results.json written by this fedkd"
        ) from None
    for name, figure in figures.items():
        click.echo(f"{name}: {figure}")


@main.command()
@config_options(*SPLIT_OPTIONS, "rounds")  # rounds: of local training before the audited release
@click.option(
    "--multipliers", default="0.03,0.1,0.3,1", show_default=True, help="Noise multipliers to audit."
)
@click.option(
    "--out", type=str, default="runs/audit", show_default=True, help="Folder for audit.json/.md/.png."
)
def audit(config_file, sets, multipliers, out, **shorthands) -> None:
    """Membership and label-distribution inference on released soft targets, without and with
    noise, each with a no-model baseline and bootstrap 95% intervals (docs/privacy.md)."""
    from experiments.plots import audit_figure
    from experiments.report import audit_markdown
    from fedkd.audit import run_audit
    from fedkd.results import atomic_write_json, atomic_write_text

    cfg = build_config(config_file, shorthands, sets, None)
    try:
        values = [float(v) for v in multipliers.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--multipliers {multipliers!r} is not a comma list of numbers") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"--multipliers {multipliers!r}: allowed: finite numbers > 0")
    audited = {"config": cfg.to_run_config(), **run_audit(cfg, values)}
    table = audit_markdown(audited)
    click.echo(
        f"privacy audit of {cfg.data.num_clients} clients after {cfg.run.rounds} round(s) of local training; "
        f"clip={cfg.privacy.clip:g}, gaussian noise on {cfg.privacy.noise_on}"
    )
    click.echo(table)
    atomic_write_json(Path(out) / "audit.json", audited)
    atomic_write_text(Path(out) / "audit.md", table)
    click.echo(f"figure: {audit_figure(audited, Path(out) / 'audit.png')}")


KEYS_HEADER = [
    "fedkd config: every key with its default and what it allows (fedkd keys --toml).",
    "Use it with: fedkd run --config FILE.toml. Any key also works as --set KEY=VALUE, in",
    "flwr run --run-config, and under [tool.flwr.app.config] in pyproject.toml.",
]


@main.command("keys")
@click.option(
    "--toml",
    "as_toml",
    is_flag=True,
    help="Print a config file instead: every key with its default and a comment (what it means, "
    "what is allowed), ready for fedkd run --config.",
)
def keys(as_toml: bool) -> None:
    """List every run_config key with its default."""
    defaults = ExperimentConfig().to_run_config()
    if as_toml:
        from fedkd.config_doc import render_toml

        click.echo(render_toml(ExperimentConfig(), KEYS_HEADER), nl=False)
        return
    for key in config_keys():
        click.echo(f"{key} = {defaults[key]!r}")


main.add_command(deploy_group)
main.add_command(algorithms_command)

if __name__ == "__main__":
    main()
