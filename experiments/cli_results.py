"""The commands that look at data and results: ``fedkd partition``, ``report``, ``plot``, ``audit``.

Apart from experiments/cli.py (which runs things) to keep each module to one job and under
300 lines; each command imports its heavy modules when it runs, so `fedkd --help` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from experiments.cli_options import SPLIT_OPTIONS, config_options
from fedkd.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from fedkd.data.partition import FederatedSplit

REPORT_FORMATS = {"markdown": "results.md", "latex": "results.tex"}  # --format: the file it prints
DPI_OPTION = click.option(
    "--dpi",
    type=click.IntRange(min=50, max=1200),
    default=300,
    show_default=True,
    help="Resolution of the PNG figures (the PDFs beside them are vector).",
)


def partition_table(hist: np.ndarray, split: FederatedSplit) -> list[str]:
    """The partition report: hist is (K, C) private-train class counts; one line per client
    (train and test sizes, classes held, class counts) plus a header and totals."""
    k, c = hist.shape
    lines = [f"{'client':>6} {'train':>6} {'test':>5} {'cls':>3} | " + " ".join(f"{j:>5}" for j in range(c))]
    for pid in range(k):
        lines.append(
            f"{pid:>6} {len(split.client_train[pid]):>6} {len(split.client_test[pid]):>5}"
            f" {int((hist[pid] > 0).sum()):>3} | " + " ".join(f"{int(v):>5}" for v in hist[pid])
        )
    lines.append(
        f"{'total':>6} {int(hist.sum()):>6} {sum(len(t) for t in split.client_test):>5}     | "
        + " ".join(f"{int(v):>5}" for v in hist.sum(axis=0))
    )
    lines.append(f"transfer set: {len(split.transfer)} samples (labels used only by pretrain-epochs)")
    return lines


@click.command()
@config_options(*SPLIT_OPTIONS)
@click.option("--out", type=str, default="runs/partition", show_default=True, help="Folder for the report.")
def partition(config_file: str | None, sets: tuple[str, ...], out: str, **shorthands: Any) -> None:
    """Print the partition report and write a clients x classes heatmap (partition.png)."""
    from experiments.figures.partition import partition_figure
    from experiments.run_setup import build_config
    from fedkd.data.federation import federation
    from fedkd.data.partition import class_histogram

    cfg = build_config(config_file, shorthands, sets, None)
    dataset, split = federation(cfg.data, cfg.run.seed)
    hist = class_histogram(dataset.train_y, split, dataset.num_classes)
    for line in partition_table(hist, split):
        click.echo(line)
    click.echo(f"heatmap: {partition_figure(hist, Path(out) / 'partition.png', dataset.class_names)}")


@click.command()
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
@click.option(
    "--margin",
    type=str,
    default="0.01",
    show_default=True,
    help="Equivalence margin in accuracy (0.01 = 1 point): a method whose paired difference to the "
    "reference is shown (TOST, Holm) to lie within +-margin is 'equivalent within +-margin'.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(REPORT_FORMATS)),
    default="markdown",
    show_default=True,
    help="Tables to print: markdown (results.md) or latex (results.tex, booktabs). Both files, and "
    "the CSVs, are always written.",
)
@DPI_OPTION
def report(
    sweep_dir: str,
    out: str | None,
    run_id: str | None,
    audit: str | None,
    reference: str,
    columns: str,
    margin: str,
    fmt: str,
    dpi: int,
) -> None:
    """Per-cell means with 95% CIs, Holm-adjusted paired comparisons with verdicts (higher,
    lower, equivalent within the margin, inconclusive), tables and figures of a sweep.

    results.md holds the block the README pastes (pivot table + comparisons), runs.csv the
    per-run numbers it is computed from; a failed run is counted there and named in a warning."""
    from experiments.figures.common import resolution
    from experiments.sweep_report import write_report

    axes = [c.strip() for c in columns.split(",") if c.strip()]
    with resolution(dpi):
        path = write_report(sweep_dir, out, run_id, audit, reference, axes, equivalence_margin(margin))
    click.echo((path.parent / REPORT_FORMATS[fmt]).read_text(), nl=False)
    click.echo(f"report: {path}")


def equivalence_margin(text: str) -> float:
    """--margin: accuracy in (0, 1), e.g. 0.01 for one point."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value < 1):
        raise ConfigError(
            f"--margin {text!r} is invalid; allowed: a number in (0, 1), in accuracy (0.01 = 1 point)"
        )
    return value


@click.command()
@click.argument("results_file")
@click.option("--out", type=str, help="Folder for the figures [default: beside RESULTS_FILE].")
@DPI_OPTION
def plot(results_file: str, out: str | None, dpi: int) -> None:
    """Figures of one run (its results.json, with rounds.jsonl beside it)."""
    from experiments.figures.common import resolution
    from experiments.figures.run import run_figures
    from experiments.run_setup import read_run

    history = read_run(results_file)
    try:
        with resolution(dpi):
            figures = run_figures(history, Path(out) if out else Path(results_file).parent)
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{results_file!r} lacks what the figures need ({type(exc).__name__}: {exc}); "
            "allowed: a results.json written by this fedkd"
        ) from None
    for name, figure in figures.items():
        click.echo(f"{name}: {figure}")


@click.command()
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
    from experiments.audit import run_audit
    from experiments.audit_table import audit_markdown
    from experiments.figures.privacy import audit_figure
    from experiments.run_setup import build_config
    from fedkd.results_files import atomic_write_json, atomic_write_text

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


RESULT_COMMANDS = (partition, report, plot, audit)
