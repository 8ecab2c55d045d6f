"""The ``fedkd`` command line: the group, ``run``, ``sweep`` and ``keys``.

Usage errors (bad values, unknown keys, malformed files) print one line and exit with code 2;
nothing is started before the config and the data split have been checked
(experiments/run_setup.py). The commands that read results live in experiments/cli_results.py,
``deploy`` in experiments/cli_deploy.py, ``tune`` in experiments/cli_tune.py. Each command
imports what it needs when it runs, so `fedkd --help` and `fedkd keys` do not wait for torch.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from experiments.cli_algorithms import algorithms as algorithms_command
from experiments.cli_deploy import deploy as deploy_group
from experiments.cli_options import CONFIG_OPTIONS, config_options
from experiments.cli_results import RESULT_COMMANDS
from experiments.cli_sweep import sweep as sweep_command
from experiments.cli_tune import tune as tune_command
from experiments.console import plain_unless_terminal
from experiments.stop_signals import exit_code, reason, signal_taken, stop_on_signals
from fedkd.config import ExperimentConfig, config_keys
from fedkd.errors import ConfigError
from fedkd.results_files import failure_reason, saved_failure


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
        except OSError as exc:  # a folder that filled up or turned read-only (runs: see `run`)
            click.echo(f"fedkd: error: {failure_reason(exc)}", err=True)
            sys.exit(1)
        except click.exceptions.Abort as abort:  # Ctrl-C, or SIGINT/SIGTERM (experiments/stop_signals.py)
            signum = getattr(abort.__context__, "signum", None) or signal_taken()  # Ray re-raises plain
            click.echo(f"fedkd: {reason(signum)}; results so far are kept, marked interrupted", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            # a Flower ServerApp thread may still wait for replies that never come: do not join it
            os._exit(exit_code(signum))
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=OneLineErrors)
@click.option("-v", "--verbose", is_flag=True, help="Show Flower's and Ray's own logs.")
def main(verbose: bool) -> None:
    """fedkd: federated knowledge fusion (KnFu and baselines) on Flower."""
    configure_logging(verbose)


class _QuietFlowerLog(logging.Filter):
    """Without -v: no deprecation notice (run_simulation is how Flower documents binding a config
    into apps) and no client traceback from Ray (fedkd logs each dropped client in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("DEPRECATED FEATURE" in message or "\n" in message.strip() or RAY_NOTICE in message)


RAY_NOTICE = "An exception was raised when processing a message by RayBackend"


def configure_logging(verbose: bool) -> None:
    """fedkd logs through a child of Flower's logger, so `flwr run` streams it too."""
    plain_unless_terminal()
    logging.getLogger("flwr.fedkd").setLevel(logging.DEBUG if verbose else logging.INFO)
    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:
        flwr_log.addFilter(_QuietFlowerLog())


@main.command()
@config_options(*CONFIG_OPTIONS)
@click.option(
    "--out",
    type=str,
    help="Folder for results.json and config.toml [default: runs/<algorithm>-<dataset>-<time>].",
)
@click.option(
    "--dry-run", is_flag=True, help="Check the config, the split and --out as the run would; run nothing."
)
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
    from experiments.dry_run import check_out_dir
    from experiments.engines import run_experiment
    from experiments.run_setup import (
        build_config,
        describe_federation,
        owned_out_dir,
        requested_overrides,
        resumable_run,
        where_it_lands,
    )
    from fedkd.folder_lock import check_not_busy, folder_lock
    from fedkd.results import RESULTS_FILE, default_out_dir, final_line, mark_interrupted, round_line
    from server.progress import configure_progress

    with ExitStack() as owned:  # the run folder is this process's until the command ends
        resume = None
        if resume_dir:
            if out is not None or overwrite:
                flag = "--out" if out is not None else "--overwrite"
                raise ConfigError(
                    f"{flag} with --resume: a resumed run stays in its own folder; allowed: drop {flag}"
                )
            if not dry_run and Path(resume_dir).is_dir():
                owned.enter_context(folder_lock(resume_dir))  # before reading: no live run writes it
            elif Path(resume_dir).is_dir():
                check_not_busy(resume_dir)  # the dry run refuses a live folder as the resume would
            cfg, resume = resumable_run(resume_dir, requested_overrides(config_file, shorthands, sets))
            click.echo(f"resuming {resume_dir} after round {len(resume['rounds'])} of {cfg.run.rounds}")
        else:
            cfg = build_config(config_file, shorthands, sets, out)
            if cfg.run.out_dir and not dry_run:
                owned.enter_context(owned_out_dir(cfg.run.out_dir, overwrite))
            elif cfg.run.out_dir:  # a bad --out fails the dry run as it would the run, creating nothing
                check_out_dir(cfg.run.out_dir, overwrite)
        for line in describe_federation(cfg):
            click.echo(line)
        if dry_run:
            click.echo("dry run: config and split are valid; nothing was trained")
            return
        if not cfg.run.out_dir:  # every run lands somewhere (a fresh folder, once the split is valid)
            cfg = cfg.with_overrides({"out-dir": str(default_out_dir(cfg).resolve())})
            owned.enter_context(owned_out_dir(cfg.run.out_dir, overwrite=False))
        for line in where_it_lands(cfg):
            click.echo(line)
        configure_progress("auto")  # a bar per phase on a terminal, plain lines for long phases elsewhere
        start = time.perf_counter()
        results_file = Path(cfg.run.out_dir) / RESULTS_FILE
        try:
            with stop_on_signals(on_give_up=functools.partial(mark_interrupted, results_file)):
                results = run_experiment(cfg, lambda rec: click.echo(round_line(rec, cfg.run.rounds)), resume)
        except Exception as exc:  # results.json says failed (where the folder still takes writes)
            click.echo(f"fedkd: run failed: {saved_failure(results_file) or failure_reason(exc)}", err=True)
            click.echo(f"results: {results_file}", err=True)
            sys.exit(1)
    final = results.payload["final"]
    if results.payload["status"] == "stopped":  # a stop the config asked for (max-epsilon)
        click.echo(f"fedkd: run stopped: {results.payload.get('status_reason')}")
    took = f"done in {time.perf_counter() - start:.1f} s | "
    click.echo(took + (final_line(final) if final else "no round was evaluated"))
    click.echo(f"results: {results.path}")


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
for command in RESULT_COMMANDS:
    main.add_command(command)
main.add_command(algorithms_command)
main.add_command(tune_command)
main.add_command(sweep_command)

if __name__ == "__main__":
    main()
