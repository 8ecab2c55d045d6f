"""Checks on an ExperimentConfig that can be made without loading data.

Each failure is a ConfigError whose one-line message names the key, the bad value and what
is allowed. Checks that need the data (e.g. too many clients for a dataset) run when the
split is built, with the same error type. Here, not on ExperimentConfig: the allowed names come
from the registries, which import the config (a method would close an import loop).
"""

from __future__ import annotations

import importlib.util
import math
import re
import warnings

from fedkd.compression import COMPRESSIONS, QUANT_BITS
from fedkd.config import (
    BUDGET_MATCHES,
    ENGINES,
    LOGS,
    NEIGHBOUR_RULES,
    WORKER_POOLS,
    ExperimentConfig,
    key_ranges,
    log_targets,
    plugin_option,
    plugin_options,
)
from fedkd.config_types import check_type_range
from fedkd.data.partition import PARTITIONERS
from fedkd.data.sources import DATASETS, dataset_spec
from fedkd.errors import ConfigError
from fedkd.fusion import FUSIONS
from fedkd.fusion.fedproto import shared_width
from fedkd.fusion.ktpfl import SIMPLEX_MAPS, STEP_RULES
from fedkd.fusion_cards import Uploads
from fedkd.knowledge import DIVERGENCES
from fedkd.models import parse_model_list
from fedkd.privacy import PrivacyLedger, noise_scale, release_rows
from fedkd.results import check_record_names
from fedkd.run_logs import client_columns, round_columns

RAY_RESOURCE_UNIT = 0.0001  # the smallest resource share Ray schedules (1 / RESOURCE_UNIT_SCALING)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(key: str, value: str, allowed) -> None:
    _require(value in allowed, f"unknown {key} {value!r}; allowed: {', '.join(allowed)}")


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError on the first bad value; return ``cfg`` so calls chain. Every key first
    gets its type's checks and the range declared on its field; then the checks that relate keys
    or need a registry."""
    d, t, f, r, pv = cfg.data, cfg.train, cfg.fusion, cfg.run, cfg.privacy
    ranges = key_ranges()
    for key, value in cfg.to_run_config().items():
        check_type_range(key, value)
        if key in ranges:
            _require(
                ranges[key].admits(value), f"{key}={value} is invalid; allowed: {ranges[key].describe()}"
            )
    plugin_options()  # the installed plugins' keys are sound (one line naming a bad one), given or not
    for key, value in cfg.options:  # a plugin algorithm's own keys: its range
        option = plugin_option(key)
        _require(option is not None, f"unknown config key {key!r}; allowed: the keys `fedkd keys` lists")
        rule = option.leaf.metadata.get("allowed")
        _require(
            rule is None or rule.admits(value),
            f"{key}={value} is invalid; allowed: {rule and rule.describe()}",
        )
    check_record_names()  # a recorded metric named like one of fedkd's fields: before round 1
    round_columns()
    client_columns()
    _choice("mechanism", pv.mechanism, ("none", "gaussian", "laplace"))
    _choice("noise-on", pv.noise_on, ("probabilities", "logits"))
    _choice("sensitivity-model", pv.sensitivity_model, ("client", "row"))
    _choice("accountant", pv.accountant, ("analytic", "rdp"))
    _choice("calibrate-from", pv.calibrate_from, ("noise-multiplier", "target-epsilon"))
    _choice("dataset", d.dataset, DATASETS.names())
    _choice("partitioner", d.partitioner, PARTITIONERS.names())
    _choice("algorithm", f.algorithm, FUSIONS.names())
    _choice("divergence", f.divergence, DIVERGENCES.names())
    _choice("neighbour-rule", f.neighbour_rule, NEIGHBOUR_RULES)
    _choice("engine", r.engine, ENGINES)
    _choice("budget-match", t.budget_match, BUDGET_MATCHES)
    _choice("worker-pool", r.worker_pool, WORKER_POOLS)
    _choice("ktpfl-step-rule", f.ktpfl_step_rule, STEP_RULES)
    _choice("ktpfl-simplex", f.ktpfl_simplex, SIMPLEX_MAPS)
    _choice("compression", f.compression, COMPRESSIONS)
    if d.transfer_dataset:
        _choice("transfer-dataset", d.transfer_dataset, DATASETS.names())
    names = parse_model_list(cfg.model.models)
    _require(
        len(names) <= d.num_clients,
        f"models={cfg.model.models!r} lists {len(names)} architectures for "
        f"{d.num_clients} clients; allowed: at most one per client",
    )
    _require(
        r.min_replies <= d.num_clients,
        f"min-replies={r.min_replies} is invalid; allowed: 1..num-clients ({d.num_clients})",
    )
    _require(
        f.fedmd_subset <= d.transfer_size,
        f"fedmd-subset={f.fedmd_subset}; allowed: 0 (all) .. transfer-size ({d.transfer_size})",
    )
    _require(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None,
        f"device={t.device!r} is invalid; allowed: auto, cpu, cuda, cuda:N",
    )
    _require(
        r.client_gpus == 0 or r.client_gpus >= RAY_RESOURCE_UNIT,
        f"client-gpus={r.client_gpus} is invalid; allowed: 0, or >= {RAY_RESOURCE_UNIT} (Ray's precision)",
    )
    _require(
        r.workers <= d.num_clients,  # a phase asks at most num-clients clients: more only fork idle
        f"workers={r.workers} is invalid; allowed: 0..num-clients ({d.num_clients}) (0: the available cores)",
    )
    algorithm = FUSIONS.get(f.algorithm)
    if algorithm.needs_one_architecture:
        _require(
            len(set(names)) == 1,
            f"algorithm={f.algorithm} averages weights and needs one architecture for all clients; "
            f"models={cfg.model.models!r} lists {len(set(names))}",
        )
    _require(
        pv.mechanism == "none" or not algorithm.uploads_weights,
        f"mechanism={pv.mechanism} noises predictions, but algorithm={f.algorithm} uploads its model "
        "weights unprotected; allowed: mechanism=none with this algorithm",
    )
    _require(
        pv.mechanism == "none" or not algorithm.uploads.anything or algorithm.card.noisable,
        f"mechanism={pv.mechanism} noises rows of probabilities, but algorithm={f.algorithm} uploads "
        f"{algorithm.upload_summary()}; allowed: mechanism=none with this algorithm",
    )
    if algorithm.uploads is Uploads.CLASS_PROTOTYPES:
        widths = shared_width(cfg)
        _require(
            len(widths) == 1,
            f"algorithm={f.algorithm} needs one representation width, but models={cfg.model.models!r} "
            f"have {sorted(widths)}; allowed: projection-width > 0 (a shared width, e.g. 64)",
        )
    classes = dataset_spec(d).num_classes
    _require(
        cfg.model.projection_width == 0 or cfg.model.projection_width >= classes,
        f"projection-width={cfg.model.projection_width} is below the {classes} classes of {d.dataset} (a "
        f"linear bottleneck would cap the classifier's rank); allowed: 0, or >= {classes}",
    )
    _require(
        f.compression_k < classes,
        f"compression-k={f.compression_k} is invalid; allowed: 1 .. {classes - 1} (classes - 1)",
    )
    _require(
        f.compression_bits in QUANT_BITS,
        f"compression-bits={f.compression_bits} is invalid; allowed: {', '.join(map(str, QUANT_BITS))}",
    )
    _require(  # the rule `fedkd algorithms` prints as "compressible" (fedkd/fusion_cards.py)
        f.compression == "none" or algorithm.card.compressible,
        f"compression={f.compression} with algorithm={f.algorithm}: {algorithm.card.compression_refusal()}; "
        "allowed: compression=none with this algorithm",
    )
    _check_log(r.log)
    _check_accounting(cfg)
    return cfg


def _check_accounting(cfg: ExperimentConfig) -> None:
    """Noise settings must leave the accountant a finite epsilon per release: dp-accounting fails
    on extremes (a clip of 1e308, a target-epsilon of 1e300), otherwise only after round 1 ran."""
    pv = cfg.privacy
    if pv.mechanism == "none":
        return
    try:
        with warnings.catch_warnings():  # dp-accounting warns on the extremes this refuses
            warnings.simplefilter("ignore", RuntimeWarning)
            rows = release_rows(cfg)
            scale, epsilon = noise_scale(pv, rows), PrivacyLedger(pv, rows).epsilon_for(1)
    except (ValueError, RuntimeError, ArithmeticError):
        scale = epsilon = math.nan
    given = (
        f"noise-multiplier={pv.noise_multiplier:g}"
        if pv.calibrate_from == "noise-multiplier"
        else (f"target-epsilon={pv.target_epsilon:g}")
    )
    _require(
        math.isfinite(scale) and scale > 0 and math.isfinite(epsilon),
        f"mechanism={pv.mechanism} with {given}, clip={pv.clip:g}, delta={pv.delta:g} leaves no finite "
        "epsilon per release (the accountant fails); allowed: settings closer to 1 (e.g. clip 1, "
        "target-epsilon 0.1..100)",
    )


def _check_log(log: str) -> None:
    """Known loggers only; TensorBoard needs its package (the optional extra)."""
    parts = [part.strip() for part in log.split(",") if part.strip()]
    _require(
        parts in ([], ["none"]) or all(part in LOGS for part in parts),
        f"log={log!r} is invalid; allowed: none, or a comma list of {', '.join(LOGS)}",
    )
    if "tensorboard" in log_targets(log) and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "log=tensorboard needs the tensorboard package; allowed: pip install 'fedkd[tensorboard]', "
            "or log=csv"
        )
