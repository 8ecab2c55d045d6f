"""The options that build an experiment config, each with its help; a command takes only those
it uses (`fedkd partition` has no --algorithm, `fedkd audit` no --engine)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from fedkd.choices import names
from fedkd.config import ENGINES

# Options that build an experiment config, by name; each command takes only those it uses.
CONFIG_OPTIONS = {
    "config": click.option(
        "--config",
        "config_file",
        type=str,
        help="Config file: TOML of flat keys (fedkd keys --toml), or a run's results.json.",
    ),
    "set": click.option(
        "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any key (see fedkd keys)."
    ),
    "dataset": click.option("--dataset", type=click.Choice(names("dataset")), help="Dataset of the clients."),
    "data-dir": click.option(
        "--data-dir",
        type=str,
        help="Folder with the dataset files; the .npz file for --dataset npz (else $FEDKD_DATA_DIR).",
    ),
    "download": click.option(
        "--download", is_flag=True, default=None, help="Fetch missing data from the Hugging Face hub."
    ),
    "num-clients": click.option("--num-clients", type=str, help="Number of clients (>= 2)."),
    "alpha": click.option("--alpha", type=str, help="Dirichlet concentration (> 0; lower: more skew)."),
    "seed": click.option("--seed", type=str, help="Seed of the split, the inits and every random stream."),
    "algorithm": click.option(
        "--algorithm",
        type=click.Choice(names("algorithm")),
        help="How the clients' knowledge is fused (fedkd algorithms: what each uploads, "
        "whether it personalises, its paper).",
    ),
    "rounds": click.option("--rounds", type=str, help="Federated rounds (>= 1)."),
    "engine": click.option(
        "--engine",
        type=click.Choice(ENGINES),
        help="ray: Flower's Simulation Engine; inprocess: one process.",
    ),
    "log": click.option(
        "--log",
        type=str,
        help="Logs in the run folder besides results.json and rounds.jsonl: csv (rounds.csv, "
        "clients.csv), tensorboard (tensorboard/), csv,tensorboard, or none.",
    ),
}
SPLIT_OPTIONS = ("config", "set", "dataset", "data-dir", "download", "num-clients", "alpha", "seed")


def config_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The named config options (CONFIG_OPTIONS), in this order."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            func = CONFIG_OPTIONS[name](func)
        return func

    return decorate
