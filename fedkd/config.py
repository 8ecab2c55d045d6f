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
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar, get_type_hints

from fedkd.config_types import Allowed, allowed, coerce
from fedkd.errors import ConfigError, PluginError  # ConfigError: also imported from here (re-export)
from fedkd.fusion_cards import BUILTIN_SETTINGS
from fedkd.registry import installed_plugins

T = TypeVar("T")

# Allowed values of keys that are not chosen from a registry (the registries' keys are checked
# by fedkd/validation.py, which may import them; this module imports only errors and config_types).
ENGINES = ("ray", "inprocess")
NEIGHBOUR_RULES = ("mean-threshold", "fixed-threshold", "top-m")
LOGS = ("csv", "tensorboard")  # `log` is none or a comma list of these
WORKER_POOLS = ("processes", "threads")  # the in-process engine's workers
BUDGET_MATCHES = ("steps", "passes")  # what every algorithm gets the same of per round
# Seconds: the longest timeout the OS's locks take (threading.TIMEOUT_MAX, ~292 years on Linux).
_WAIT_FROM_0, _WAIT_ABOVE_0 = (f"0 {op} value <= {threading.TIMEOUT_MAX:.6g}" for op in ("<=", "<"))


def log_targets(log: str) -> list[str]:
    """The loggers a ``log`` value asks for ("none" and "" ask for none), in a fixed order."""
    asked = {part.strip() for part in log.split(",") if part.strip()} - {"none"}
    return sorted(asked)


# Every field carries a comment saying what the value means, and a number its range
# (``allowed(default, ">= 2")``, checked by fedkd/validation.py): `fedkd keys --toml` and each
# run's config.toml print both beside the key (fedkd/config_doc.py reads the comment from here).
# Keys with a fixed set of names (dataset, algorithm, ...) get that list from their registry.


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # dataset of the private data (digits is embedded; the others: data-dir)
    data_dir: str = ""  # the data folder (npz: the .npz file); allowed: a path, or empty ($FEDKD_DATA_DIR)
    download: bool = False  # fetch from the Hugging Face hub when files are missing; allowed: true, false
    num_clients: int = allowed(10, ">= 2", "and what the data allows")  # clients, one private partition each
    partitioner: str = "dirichlet"  # how the private data is split over the clients
    alpha: float = allowed(0.5, "> 0")  # Dirichlet concentration (partitioner dirichlet; lower: more skew)
    classes_per_client: int = allowed(2, ">= 1")  # classes per client (partitioner pathological)
    # Label-sorted shards per client (partitioner shard; each shard holds a sample at least).
    shards_per_client: int = allowed(2, ">= 1")
    quantity_sigma: float = allowed(1.0, "> 0")  # spread of client sizes (partitioner quantity-lognormal)
    min_partition_size: int = allowed(
        25, ">= 2"
    )  # samples per client partition (train + local test), at least
    max_client_samples: int = allowed(0, ">= 0", "0: no cap")  # cap on each client's private train split
    # Share of each (capped) partition held out as its local test split.
    local_test_fraction: float = allowed(0.2, "0 < value < 1")
    min_local_test_size: int = allowed(5, ">= 1")  # samples; a smaller local test split is a config error
    # Share of each client's (capped) private train split held out as its validation split, on
    # which hyperparameters and the reported round are chosen (never on test).
    val_fraction: float = allowed(0.1, "0 <= value < 1", "0: no validation split")
    # Per client: a sample of the dataset's test split drawn with the client's training label mix,
    # scored every evaluated round (the headline ALMA: far more precise than the small local test
    # split).
    matched_test_size: int = allowed(500, ">= 0", "0: none; the headline is then the local test split")
    # Fixed random subset of the test split for global accuracy (samples).
    global_test_size: int = allowed(500, ">= 0", "0: all of it")
    transfer_size: int = allowed(200, ">= 1")  # samples in the shared (unlabelled) transfer set
    # Dataset the transfer set is drawn from (same image shape as dataset); "": held out from the
    # training data.
    transfer_dataset: str = ""


@dataclass(frozen=True)
class ModelConfig:
    # Comma-separated architecture names, cycled over clients (or one per client).
    models: str = "mlp,cnn-s,lenet5"
    # Width of a linear projection between each model's body and its classifier: a representation
    # width every architecture shares (FedProto's prototypes live there).
    projection_width: int = allowed(0, "0 <= value <= 4096", "0: none")


@dataclass(frozen=True)
class TrainConfig:
    local_epochs: int = allowed(3, ">= 1")  # passes over the private train split per round, before distilling
    # What every algorithm gets the same of per round: steps (optimiser steps: a client that
    # distils less than distill-epochs over the whole transfer set, local included, spends the
    # difference on private data) or passes (the same private epochs; distillation is extra, as
    # most papers run it); allowed: steps, passes.
    budget_match: str = "steps"
    batch_size: int = allowed(32, ">= 1")  # samples per optimiser step
    learning_rate: float = allowed(0.003, "> 0")  # Adam's learning rate (a fresh optimiser per phase)
    temperature: float = allowed(3.0, "> 0")  # softmax temperature of soft predictions and of the KD loss
    distill_epochs: int = allowed(2, ">= 0")  # passes over the transfer set per round, distilling
    revisit_epochs: int = allowed(1, ">= 0")  # passes over the private train split after distilling
    # Supervised epochs on the *labelled* transfer set before round 1, for every client and
    # every algorithm (FedMD's transfer-learning phase).
    pretrain_epochs: int = allowed(0, ">= 0", "0: the transfer set stays unlabelled")
    # Torch threads per client (Ray: CPUs per virtual client).
    client_threads: int = allowed(1, "1 <= value <= 256")
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    mixed_precision: bool = False  # bfloat16 autocast on CUDA; allowed: true, false


@dataclass(frozen=True)
class FusionChoice:
    algorithm: str = "knfu"  # how the clients' knowledge is combined each round


@dataclass(frozen=True)
class CompressionSettings:
    # Soft-prediction uploads, compressed client-side after any privacy noise: none | topk | quant.
    compression: str = "none"
    # compression topk: largest entries kept per row.
    compression_k: int = allowed(2, ">= 1", "and below the number of classes")
    compression_bits: int = allowed(8, "2 <= value <= 8", "8, 4 or 2")  # compression quant: bits per entry


# The fusion section: the algorithm, every built-in algorithm's own settings (each declared with
# its card, fedkd/fusion_cards.py) and the upload compression; one flat key per field as in every
# section. A plugin algorithm's settings are ``options`` (below).
FUSION_PARTS: tuple[type, ...] = (FusionChoice, *BUILTIN_SETTINGS, CompressionSettings)


def _compose(name: str, parts: tuple[type, ...]) -> type:
    """One frozen dataclass with the fields of ``parts`` in order (a name twice is a bug here)."""
    specs = []
    for part in parts:
        hints = get_type_hints(part)
        specs += [
            (f.name, hints[f.name], field(default=f.default, metadata=f.metadata)) for f in fields(part)
        ]
    names = [spec[0] for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: a key is declared twice: {sorted(n for n in names if names.count(n) > 1)}")
    composed = dataclasses.make_dataclass(name, specs, frozen=True)
    composed.__module__ = __name__  # pickled by name, as every config section (workers, Ray)
    return composed


FusionConfig = _compose("FusionConfig", FUSION_PARTS)


@dataclass(frozen=True)
class PrivacyConfig:
    mechanism: str = "none"  # none | gaussian | laplace (noise on soft targets, client-side)
    calibrate_from: str = "noise-multiplier"  # noise-multiplier | target-epsilon
    # Per-entry noise scale / clip bound (smaller than 1e-6 overflows the accountant).
    noise_multiplier: float = allowed(1.0, ">= 1e-06")
    # Per-release epsilon, when calibrate-from = target-epsilon.
    target_epsilon: float = allowed(1.0, "> 0")
    delta: float = allowed(1e-5, "0 < value < 1")  # delta of the (epsilon, delta) guarantee
    clip: float = allowed(1.0, "> 0")  # row norm bound (L2 for gaussian, L1 for laplace)
    noise_on: str = "probabilities"  # probabilities | logits
    sensitivity_model: str = "client"  # client (whole release) | row (one transfer-set row)
    # Stop releasing before a client's epsilon would exceed this.
    max_epsilon: float = allowed(0.0, ">= 0", "0: no limit")
    accountant: str = "analytic"  # analytic (exact Gaussian, Balle & Wang 2018) | rdp (Renyi DP, looser)


@dataclass(frozen=True)
class RunConfig:
    rounds: int = allowed(10, ">= 1")  # federated rounds
    seed: int = allowed(0, ">= 0")  # seeds the split, every client's init and every random stream
    eval_every: int = allowed(1, ">= 1")  # evaluate every N rounds (and always after the last one)
    engine: str = "ray"  # what runs `fedkd run` (flwr run ignores it)
    min_replies: int = allowed(2, ">= 1", "at most num-clients")  # valid uploads needed to fuse in a round
    # Share of clients asked to train each round (partial participation).
    fraction: float = allowed(1.0, "0 < value <= 1")
    # Seconds to wait for replies in a phase (at most the OS's longest timeout).
    reply_timeout: float = allowed(0.0, _WAIT_FROM_0, "0: wait for all")
    # Ray simulation: GPUs per virtual client (0.25 = 4 clients per GPU; Ray's unit is 0.0001).
    client_gpus: float = allowed(0.0, ">= 0", "0, or at least 0.0001")
    # In-process engine: clients of a phase trained side by side by this many workers (numbers
    # identical to one at a time).
    workers: int = allowed(0, ">= 0", "at most num-clients; 0: the cores this process may use")
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
    # (flwr run: SuperNodes; at most the OS's longest timeout).
    min_nodes_wait: float = allowed(30.0, _WAIT_ABOVE_0)
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
    # A plugin algorithm's own keys (its card's settings dataclasses), as (key, value) pairs in key
    # order: those given away from their defaults, each a flat key like any other (settings_of
    # reads them, defaults where absent).
    options: tuple[tuple[str, bool | int | float | str], ...] = ()

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """Flatten to Flower run_config: one kebab-case key per leaf field, then the options."""
        flat: dict[str, bool | int | float | str] = {}
        for section in sections():
            part = getattr(self, section.name)
            for leaf in fields(part):
                flat[_key(leaf.name)] = getattr(part, leaf.name)
        return {**flat, **dict(self.options)}

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
        options = dict(self.options)
        spelled: dict[str, str] = {}
        for raw_key, value in overrides.items():
            key = str(raw_key).replace("_", "-")
            option = None if key in index else plugin_option(key)
            if key not in index and option is None:
                close = difflib.get_close_matches(key, [*index, *plugin_options()], n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"unknown config key {raw_key!r}; {hint}allowed: {', '.join(sorted(index))}, "
                    "or a key of an installed plugin algorithm"
                )
            if key in spelled:
                raise ConfigError(f"{key} is given twice ({spelled[key]}, {raw_key}); allowed: one spelling")
            spelled[key] = str(raw_key)
            if option is not None:
                options[key] = coerce(key, value, option.kind, text)
                if options[key] == option.leaf.default:  # at its default: as if not given (one identity)
                    del options[key]
                continue
            section, name, kind = index[key]
            changes.setdefault(section, {})[name] = coerce(key, value, kind, text)
        parts = {s: replace(getattr(self, s), **c) for s, c in changes.items()}
        return replace(self, **parts, options=tuple(sorted(options.items())))


def _key(name: str) -> str:
    return name.replace("_", "-")


def sections() -> list[dataclasses.Field]:
    """The config's sections (data, model, train, fusion, privacy, run): every field but options."""
    return [f for f in fields(ExperimentConfig) if f.name != "options"]


@dataclass(frozen=True)
class PluginOption:
    """A key of a plugin algorithm: the algorithm, the settings dataclass and field declaring it."""

    algorithm: str
    settings: type
    leaf: dataclasses.Field
    kind: type


def plugin_option(key: str) -> PluginOption | None:
    """The installed plugin algorithm's key ``key`` (loading the plugins: asked only for a key no
    section has), or None."""
    return plugin_options().get(key)


def plugin_options() -> dict[str, PluginOption]:
    """Every key the installed plugin algorithms declare in their cards' settings; a key that
    clashes with a section's key or another plugin's, has no default, is not a bool, int, float
    or str, or sits in a class that is not frozen is a one-line PluginError naming it."""
    if not installed_plugins("algorithm"):
        return {}  # nothing to load (and no torch to import for it)
    from fedkd.fusion import FUSIONS  # fusion imports this module; plugins load on first need

    builtin = set(_leaf_index())
    found: dict[str, PluginOption] = {}
    for name in FUSIONS.plugin_names():
        for cls in FUSIONS.get(name).card.settings:
            where = f"algorithm plugin {name}: setting"
            if not cls.__dataclass_params__.frozen:
                raise PluginError(f"{where}s {cls.__name__} are not frozen; allowed: @dataclass(frozen=True)")
            hints = get_type_hints(cls)
            for leaf in fields(cls):
                key = _key(leaf.name)
                if key in builtin or key in found:
                    other = "a fedkd key" if key in builtin else f"a key of algorithm {found[key].algorithm}"
                    raise PluginError(f"{where} {key!r} is {other} already; allowed: a new name")
                if leaf.default is dataclasses.MISSING or hints[leaf.name] not in (bool, int, float, str):
                    raise PluginError(f"{where} {key!r} needs a default and a bool, int, float or str type")
                found[key] = PluginOption(name, cls, leaf, hints[leaf.name])
    return found


def settings_of(cfg: ExperimentConfig, settings: type[T]) -> T:
    """The values of the settings dataclass ``settings`` in ``cfg``: a built-in algorithm's from
    the fusion section, a plugin's from ``options`` (its defaults where not given)."""
    given = dict(cfg.options)
    values = {}
    for leaf in fields(settings):
        if hasattr(cfg.fusion, leaf.name):
            values[leaf.name] = getattr(cfg.fusion, leaf.name)
        elif _key(leaf.name) in given:
            values[leaf.name] = given[_key(leaf.name)]
    return settings(**values)


def _leaf_index() -> dict[str, tuple[str, str, type]]:
    """Map each flat key to (section, field name, Python type)."""
    index: dict[str, tuple[str, str, type]] = {}
    for section in sections():
        part_type = get_type_hints(ExperimentConfig)[section.name]
        hints = get_type_hints(part_type)
        for leaf in fields(part_type):
            index[_key(leaf.name)] = (section.name, leaf.name, hints[leaf.name])
    return index


def key_ranges() -> dict[str, Allowed]:
    """kebab-case key -> the range declared on its field (keys without one are absent)."""
    return {
        _key(leaf.name): leaf.metadata["allowed"]
        for section in sections()
        for leaf in fields(get_type_hints(ExperimentConfig)[section.name])
        if "allowed" in leaf.metadata
    }


def config_keys() -> list[str]:
    return sorted(_leaf_index())


def value_text(flat: Mapping[str, Any], key: str) -> str:
    """A flat config's value of ``key`` for a message: a plugin key left out holds its default."""
    return repr(flat[key]) if key in flat else "its default"


def is_config_key(key: str) -> bool:
    """A section's key, or an installed plugin algorithm's."""
    return key in _leaf_index() or plugin_option(key) is not None


def as_dict(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)
