"""One frozen config tree for a whole experiment.

The same config travels three ways: as dataclasses inside Python, as Flower's flat
``run_config`` (kebab-case keys, scalar values) and as a TOML file. ``to_run_config`` and
``from_run_config`` are the only bridge, so every key a user can ``--set`` is a field here.
This module knows types, not the registries: ``fedkd.validation.validate_config`` checks the
values (it imports the registries, which import this module), ``fedkd.config_files`` reads files.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, get_type_hints

from fedkd.config_types import coerce
from fedkd.errors import ConfigError  # also imported from here by callers (re-export)

# Allowed values of keys that are not chosen from a registry (the registries' keys are checked
# by fedkd/validation.py, which may import them; this module imports only errors and config_types).
ENGINES = ("ray", "inprocess")
NEIGHBOUR_RULES = ("mean-threshold", "fixed-threshold", "top-m")
LOGS = ("csv", "tensorboard")  # `log` is none or a comma list of these
WORKER_POOLS = ("processes", "threads")  # the in-process engine's workers
BUDGET_MATCHES = ("steps", "passes")  # what every algorithm gets the same of per round


def log_targets(log: str) -> list[str]:
    """The loggers a ``log`` value asks for ("none" and "" ask for none), in a fixed order."""
    asked = {part.strip() for part in log.split(",") if part.strip()} - {"none"}
    return sorted(asked)


# Every field carries a comment saying what the value means and what is allowed: `fedkd keys
# --toml` and each run's config.toml print it beside the key (fedkd/config_doc.py reads it from
# here). Keys with a fixed set of names (dataset, algorithm, ...) get that list from their registry.


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # dataset of the private data (digits is embedded; the others: data-dir)
    data_dir: str = ""  # folder with the dataset files; allowed: a path, or empty ($FEDKD_DATA_DIR)
    download: bool = False  # fetch from the Hugging Face hub when files are missing; allowed: true, false
    num_clients: int = 10  # clients, one private partition each; allowed: >= 2 (and what the data allows)
    partitioner: str = "dirichlet"  # how the private data is split over the clients
    alpha: float = 0.5  # Dirichlet concentration (partitioner dirichlet; lower: more skew); allowed: > 0
    classes_per_client: int = 2  # classes per client (partitioner pathological); allowed: >= 1
    shards_per_client: int = 2  # label-sorted shards per client (partitioner shard); allowed: >= 1
    quantity_sigma: float = 1.0  # spread of client sizes (partitioner quantity-lognormal); allowed: > 0
    min_partition_size: int = 25  # samples per client partition (train + local test), at least; allowed: >= 2
    # Cap on each client's private train split (samples); allowed: >= 0 (0: no cap).
    max_client_samples: int = 0
    # Share of each (capped) partition held out as its local test split; allowed: 0 < value < 1.
    local_test_fraction: float = 0.2
    min_local_test_size: int = 5  # samples; a smaller local test split is a config error; allowed: >= 1
    # Share of each client's (capped) private train split held out as its validation split, on
    # which hyperparameters and the reported round are chosen (never on test); allowed:
    # 0 <= value < 1 (0: no validation split).
    val_fraction: float = 0.1
    # Per client: a sample of the dataset's test split drawn with the client's training label mix,
    # scored every evaluated round (the headline ALMA: far more precise than the small local test
    # split); allowed: >= 0 (0: none; the headline is then the local test split).
    matched_test_size: int = 500
    # Fixed random subset of the test split for global accuracy (samples); allowed: >= 0 (0: all of it).
    global_test_size: int = 500
    transfer_size: int = 200  # samples in the shared (unlabelled) transfer set; allowed: >= 1
    # Dataset the transfer set is drawn from (same image shape as dataset); "": held out from the
    # training data.
    transfer_dataset: str = ""


@dataclass(frozen=True)
class ModelConfig:
    # Comma-separated architecture names, cycled over clients (or one per client).
    models: str = "mlp,cnn-s,lenet5"


@dataclass(frozen=True)
class TrainConfig:
    local_epochs: int = 3  # passes over the private train split per round, before distilling; allowed: >= 1
    # What every algorithm gets the same of per round: steps (optimiser steps: a client that
    # distils less than distill-epochs over the whole transfer set, local included, spends the
    # difference on private data) or passes (the same private epochs; distillation is extra, as
    # most papers run it); allowed: steps, passes.
    budget_match: str = "steps"
    batch_size: int = 32  # samples per optimiser step; allowed: >= 1
    learning_rate: float = 0.003  # Adam's learning rate (a fresh optimiser per phase); allowed: > 0
    temperature: float = 3.0  # softmax temperature of soft predictions and of the KD loss; allowed: > 0
    distill_epochs: int = 2  # passes over the transfer set per round, distilling; allowed: >= 0
    revisit_epochs: int = 1  # passes over the private train split after distilling; allowed: >= 0
    # Supervised epochs on the *labelled* transfer set before round 1, for every client and
    # every algorithm (FedMD's transfer-learning phase); allowed: >= 0 (0: the transfer set stays
    # unlabelled).
    pretrain_epochs: int = 0
    client_threads: int = 1  # torch threads per client (Ray: CPUs per virtual client); allowed: 1..256
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    mixed_precision: bool = False  # bfloat16 autocast on CUDA; allowed: true, false


@dataclass(frozen=True)
class FusionConfig:
    algorithm: str = "knfu"  # how the clients' knowledge is combined each round
    divergence: str = "kl"  # KnFu: divergence between two clients' EPDs (kl, js) or predictions (cosine)
    neighbour_rule: str = "mean-threshold"  # KnFu: which clients count as semantic neighbours
    # KnFu, neighbour-rule fixed-threshold: largest divergence of a neighbour; allowed: >= 0.
    neighbour_threshold: float = 0.1
    neighbour_top_m: int = 3  # KnFu, neighbour-rule top-m: closest clients kept; allowed: >= 1
    beta: float = 10.0  # KnFu: weights = softmax(-beta * divergence); allowed: >= 0
    include_self: bool = True  # KnFu: a client is its own neighbour (divergence 0); allowed: true, false
    dsfl_temperature: float = 0.1  # DS-FL entropy reduction (lower: sharper); allowed: > 0
    # FedMD: transfer rows drawn afresh each round for consensus/digest; allowed: 0 (all) ..
    # transfer-size.
    fedmd_subset: int = 0
    # FedMD (not fedmd-nopretrain): epochs of its transfer-learning phase, supervised on the
    # labelled transfer set before a client's first round, on top of pretrain-epochs; allowed: >= 0.
    fedmd_pretrain_epochs: int = 20
    # knfu-guard: share of private data held out for the guard; allowed: 0 < value < 1.
    guard_fraction: float = 0.1
    # knfu-guard: allowed drop in guard accuracy before rollback; allowed: >= 0.
    guard_tolerance: float = 0.0
    # KT-pFL: step size on the knowledge-coefficient matrix C: adaptive (the reference code's: per
    # row, a power of 5 that puts the mean absolute step in [0.01, 0.05)) | fixed (ktpfl-step-size).
    ktpfl_step_rule: str = "adaptive"
    # KT-pFL, ktpfl-step-rule fixed: step size of each gradient step on C; allowed: > 0.
    ktpfl_step_size: float = 0.1
    # KT-pFL: how a row of C returns to the simplex after a step: softmax (the reference code's
    # softmax(5 c)) | projection (Euclidean projection onto the simplex).
    ktpfl_simplex: str = "softmax"
    # KT-pFL: rho of the regulariser rho * ||C - 1/K||^2 (pulls C towards uniform); allowed: >= 0.
    ktpfl_rho: float = 0.7
    ktpfl_steps: int = 1  # KT-pFL: gradient steps on C per round (server side); allowed: >= 1
    # FedDF: server distillation steps (mini-batches of batch-size transfer rows) per architecture
    # and round; allowed: >= 0 (0: per-architecture FedAvg only).
    feddf_server_steps: int = 100
    # Selective-FD, client side: the share of its own private samples (leave-one-out) a client's
    # density-ratio selector would pass; a transfer row is uploaded if its ratio is at least theirs
    # at quantile 1 - this; allowed: 0 < value <= 1.
    selective_quantile: float = 0.75
    # Selective-FD, client side: Gaussian kernel width of the density-ratio estimate, as a multiple
    # of the median distance between private and transfer inputs; allowed: > 0.
    selective_kernel_width: float = 1.0
    # Selective-FD, server side: rows whose ensemble prediction has normalised entropy (entropy /
    # ln C) above this get no target; allowed: 0 < value <= 1 (1: keep every row).
    selective_entropy: float = 0.9
    # Soft-prediction uploads, compressed client-side after any privacy noise: none | topk | quant.
    compression: str = "none"
    compression_k: int = 2  # compression topk: largest entries kept per row; allowed: 1 .. classes - 1
    compression_bits: int = 8  # compression quant: bits per entry; allowed: 8, 4, 2


@dataclass(frozen=True)
class PrivacyConfig:
    mechanism: str = "none"  # none | gaussian | laplace (noise on soft targets, client-side)
    calibrate_from: str = "noise-multiplier"  # noise-multiplier | target-epsilon
    noise_multiplier: float = 1.0  # per-entry noise scale / clip bound
    target_epsilon: float = 1.0  # per-release epsilon (any > 0), when calibrate-from = target-epsilon
    delta: float = 1e-5
    clip: float = 1.0  # row norm bound (L2 for gaussian, L1 for laplace)
    noise_on: str = "probabilities"  # probabilities | logits
    sensitivity_model: str = "client"  # client (whole release) | row (one transfer-set row)
    max_epsilon: float = 0.0  # > 0: stop releasing before a client would exceed it
    accountant: str = "analytic"  # analytic (exact Gaussian, Balle & Wang 2018) | rdp (Renyi DP, looser)


@dataclass(frozen=True)
class RunConfig:
    rounds: int = 10  # federated rounds; allowed: >= 1
    seed: int = 0  # seeds the split, every client's init and every random stream; allowed: an integer >= 0
    eval_every: int = 1  # evaluate every N rounds (and always after the last one); allowed: >= 1
    engine: str = "ray"  # what runs `fedkd run` (flwr run ignores it)
    min_replies: int = 2  # valid uploads needed to fuse in a round; allowed: 1..num-clients
    # Share of clients asked to train each round (partial participation); allowed: 0 < value <= 1.
    fraction: float = 1.0
    # Seconds to wait for replies in a phase; allowed: 0 .. the OS's longest timeout (0: wait for all).
    reply_timeout: float = 0.0
    # Ray simulation: GPUs per virtual client (0.25 = 4 clients per GPU); allowed: 0, or >= 0.0001.
    client_gpus: float = 0.0
    # In-process engine: clients of a phase trained side by side by this many workers (numbers
    # identical to one at a time); allowed: 0..num-clients (0: the cores this process may use).
    workers: int = 0
    # In-process engine: what the workers are; processes (separate Python processes, as Ray's
    # actors: small models, whose steps hold the GIL, run truly side by side) or threads (one
    # process, one copy of the data: models whose kernels dominate, one GPU); allowed: processes,
    # threads.
    worker_pool: str = "processes"
    # In-process engine: keep each client's state (its model) on disk while it sits a round out,
    # for thousands of registered clients with a few asked per round; numbers unchanged; allowed:
    # true, false.
    offload_idle: bool = False
    # Ray simulation: address of an existing Ray cluster ("auto", "HOST:6379"); allowed: a Ray
    # address, or empty (start a local Ray on this machine).
    ray_address: str = ""
    # Seconds the server waits for num-clients nodes to connect before it stops with an error
    # (flwr run: SuperNodes); allowed: > 0 .. the OS's longest timeout.
    min_nodes_wait: float = 30.0
    # Folder for results.json and config.toml; allowed: a path, or empty (fedkd run and flwr run:
    # runs/<algorithm>-<dataset>-<YYYYmmdd-HHMMSS> in the working folder).
    out_dir: str = ""
    # Logs beside results.json and rounds.jsonl: csv (rounds.csv, clients.csv), tensorboard
    # (out-dir/tensorboard: scalars per round, the weight matrix as an image), both, or none.
    log: str = "none"


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """Flatten to Flower run_config: one kebab-case key per leaf field."""
        flat: dict[str, bool | int | float | str] = {}
        for section in fields(self):
            part = getattr(self, section.name)
            for leaf in fields(part):
                flat[_key(leaf.name)] = getattr(part, leaf.name)
        return flat

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ExperimentConfig:
        """Build from flat typed keys (all optional; unknown keys are an error)."""
        return cls().with_overrides(run_config, text=False)

    def with_overrides(self, overrides: Mapping[str, Any], text: bool = True) -> ExperimentConfig:
        """Return a copy with flat-key overrides applied and their types coerced. ``text=False``
        (typed sources: TOML, JSON, Flower's run_config) refuses a string for a non-string key; two
        spellings of one key (``num_clients``, ``num-clients``) in one mapping are refused."""
        index = _leaf_index()
        changes: dict[str, dict[str, Any]] = {}
        spelled: dict[str, str] = {}
        for raw_key, value in overrides.items():
            key = str(raw_key).replace("_", "-")
            if key not in index:
                close = difflib.get_close_matches(key, list(index), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"unknown config key {raw_key!r}; {hint}allowed: {', '.join(sorted(index))}"
                )
            if key in spelled:
                raise ConfigError(f"{key} is given twice ({spelled[key]}, {raw_key}); allowed: one spelling")
            spelled[key] = str(raw_key)
            section, name, kind = index[key]
            changes.setdefault(section, {})[name] = coerce(key, value, kind, text)
        parts = {s: replace(getattr(self, s), **c) for s, c in changes.items()}
        return replace(self, **parts)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _leaf_index() -> dict[str, tuple[str, str, type]]:
    """Map each flat key to (section, field name, Python type)."""
    index: dict[str, tuple[str, str, type]] = {}
    for section in fields(ExperimentConfig):
        part_type = get_type_hints(ExperimentConfig)[section.name]
        hints = get_type_hints(part_type)
        for leaf in fields(part_type):
            index[_key(leaf.name)] = (section.name, leaf.name, hints[leaf.name])
    return index


def config_keys() -> list[str]:
    return sorted(_leaf_index())


def as_dict(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)
